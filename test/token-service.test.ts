import { randomBytes } from "node:crypto";
import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { BadRequest } from "../src/generated/google/rpc/error_details";
import {
  type Token,
  TokenKind,
  TokenStatus,
} from "../src/generated/token/v1/token_service";
import { hashSecret, verifySignature } from "../src/tokens/secret";
import {
  eventsOf,
  resourceDetails,
  statusDetails,
  tokensOf,
  violatedFields,
} from "./support/assertions";
import { insertToken, storedSecret } from "./support/rows";
import {
  call,
  callError,
  ownerRequest,
  startTestService,
  type TestService,
  withNewRequestId,
} from "./support/service";

const TOKEN_PATTERN = /^vtk_[A-Za-z0-9_-]{43}$/;
const DAY_MS = 24 * 60 * 60 * 1000;

describe("TokenService", () => {
  let service: TestService;
  // Every secret the service handed out, to check the logs against.
  const issued = new Set<string>();

  before(async () => {
    service = await startTestService();
  });

  after(async () => {
    await service.stop();
  });

  function remember(token: Token | undefined): Token {
    expect(token, "response token").to.not.equal(undefined);
    if (token!.secret) {
      issued.add(token!.secret);
    }
    return token!;
  }

  const rpc = {
    createDefault: (request: object, metadata?: Metadata) =>
      call(
        service.client,
        service.client.createDefault,
        request as any,
        {},
        metadata,
      ),
    regenerate: (request: object) =>
      call(service.client, service.client.regenerate, request as any),
    getOrProvision: (request: object) =>
      call(service.client, service.client.getOrProvision, request as any),
    delete: (request: object) =>
      call(service.client, service.client.delete, request as any),
  };

  /** Checks the invariants every stored default token keeps. */
  async function expectStoredMatches(token: Token): Promise<void> {
    const [row] = await service.db("api_tokens").where({ id: token.id });
    expect(row, "stored row").to.not.equal(undefined);
    expect(row.token_hash).to.equal(hashSecret(token.secret));
    expect(storedSecret(service.config, row)).to.equal(token.secret);
    expect(row.secret_ciphertext.includes(Buffer.from(token.secret))).to.equal(
      false,
    );
    expect(
      verifySignature(
        token.secret,
        token.signature,
        service.config.keys.signingSecret!,
      ),
    ).to.equal(true);
  }

  it("logs the migrations it applied", () => {
    const entry = service.logs
      .entries()
      .find((line) => line.msg === "applied database migrations");

    expect(entry, "log line").to.not.equal(undefined);
    expect(entry!.migrations).to.deep.equal([
      "20261204000000_create_api_tokens",
      "20261205000000_add_rotation_and_idempotency",
    ]);
  });

  describe("CreateDefault", () => {
    it("creates a signed default token", async () => {
      const request = ownerRequest();
      const metadata = new Metadata();
      metadata.set("x-client-service", "profile-gateway");

      const { token } = await rpc.createDefault(request, metadata);
      remember(token);

      expect(token!.secret).to.match(TOKEN_PATTERN);
      expect(token!.label).to.equal("Default");
      expect(token!.kind).to.equal(TokenKind.TOKEN_KIND_DEFAULT);
      expect(token!.status).to.equal(TokenStatus.TOKEN_STATUS_ACTIVE);
      expect(token!.userId).to.equal(request.userId);
      expect(token!.masked).to.equal(
        `${token!.secret.slice(0, 12)}...${token!.secret.slice(-4)}`,
      );
      const lifetimeMs =
        token!.expiresAt!.getTime() - token!.createdAt!.getTime();
      expect(Math.round(lifetimeMs / DAY_MS)).to.equal(90);
      await expectStoredMatches(token!);

      const events = await eventsOf(service.db, request.userId);
      expect(events).to.have.length(1);
      expect(events[0].action).to.equal("create");
      expect(events[0].token_id).to.equal(token!.id);
      expect(events[0].masked).to.equal(token!.masked);
      expect(events[0].request_id).to.equal(request.audit.requestId);
      expect(events[0].client_ip).to.equal("203.0.113.7");
      expect(events[0].client_service).to.equal("profile-gateway");
      expect(events[0].rpc).to.equal("CreateDefault");
    });

    it("returns ALREADY_EXISTS with the existing id", async () => {
      const request = ownerRequest();
      const { token } = await rpc.createDefault(request);
      remember(token);

      const err = await callError(
        service.client,
        service.client.createDefault,
        withNewRequestId(request),
      );

      expect(err.code).to.equal(status.ALREADY_EXISTS);
      const { resource, info } = resourceDetails(err);
      expect(resource?.resourceName).to.equal(token!.id);
      expect(info?.metadata.token_id).to.equal(token!.id);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
      expect(await tokensOf(service.db, request.userId)).to.have.length(1);
    });

    it("keeps each org_id a separate scope", async () => {
      const request = ownerRequest();
      const inNoOrg = await rpc.createDefault(request);
      const inOrg = await rpc.createDefault({
        ...withNewRequestId(request),
        orgId: "org-7",
      });
      remember(inNoOrg.token);
      remember(inOrg.token);

      expect(inOrg.token!.id).to.not.equal(inNoOrg.token!.id);
      expect(inOrg.token!.orgId).to.equal("org-7");
      expect(await tokensOf(service.db, request.userId)).to.have.length(2);
    });
  });

  describe("Regenerate", () => {
    it("replaces the secret in place", async () => {
      const request = ownerRequest();
      const before = remember((await rpc.createDefault(request)).token);

      const result = await rpc.regenerate(request);
      const after = remember(result.token);

      expect(result.created).to.equal(false);
      expect(after.id).to.equal(before.id);
      expect(after.label).to.equal("Default");
      expect(after.secret).to.match(TOKEN_PATTERN);
      expect(after.secret).to.not.equal(before.secret);
      await expectStoredMatches(after);

      const events = await eventsOf(service.db, request.userId);
      expect(events.map((e) => e.action)).to.deep.equal([
        "create",
        "regenerate",
      ]);
      expect(events[1].masked).to.equal(after.masked);
      expect(events[1].reason).to.equal(null);
    });

    it("creates the token when missing", async () => {
      const request = ownerRequest();

      const result = await rpc.regenerate(request);
      remember(result.token);

      expect(result.created).to.equal(true);
      await expectStoredMatches(result.token!);
      const events = await eventsOf(service.db, request.userId);
      expect(events.map((e) => e.action)).to.deep.equal(["create"]);
    });

    it("re-enables a disabled, expired token", async () => {
      const request = ownerRequest();
      const created = remember((await rpc.createDefault(request)).token);
      await service
        .db("api_tokens")
        .where({ id: created.id })
        .update({ disabled: true, expires_at: new Date(Date.now() - DAY_MS) });

      const { token } = await rpc.regenerate(request);
      remember(token);

      expect(token!.status).to.equal(TokenStatus.TOKEN_STATUS_ACTIVE);
      expect(token!.expiresAt!.getTime()).to.be.greaterThan(
        Date.now() + 89 * DAY_MS,
      );
      const [row] = await tokensOf(service.db, request.userId);
      expect(row.disabled).to.equal(false);
    });
  });

  describe("GetOrProvision", () => {
    it("provisions a missing token", async () => {
      const request = ownerRequest();

      const result = await rpc.getOrProvision(request);
      remember(result.token);

      expect(result.provisioned).to.equal(true);
      await expectStoredMatches(result.token!);
      const events = await eventsOf(service.db, request.userId);
      expect(events).to.have.length(1);
      expect(events[0].action).to.equal("create");
      expect(events[0].reason).to.equal("provision");
    });

    it("returns a valid token unchanged", async () => {
      const request = ownerRequest();
      const first = await rpc.getOrProvision(request);
      remember(first.token);

      const second = await rpc.getOrProvision(withNewRequestId(request));

      expect(second.provisioned).to.equal(false);
      expect(second.token!.secret).to.equal(first.token!.secret);
      expect(second.token!.signature).to.equal(first.token!.signature);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });

    for (const [reason, change] of [
      ["expired", { expires_at: new Date(Date.now() - 1000) }],
      ["disabled", { disabled: true }],
    ] as const) {
      it(`replaces the ${reason} token`, async () => {
        const request = ownerRequest();
        const before = remember((await rpc.createDefault(request)).token);
        await service.db("api_tokens").where({ id: before.id }).update(change);

        const result = await rpc.getOrProvision(request);
        const after = remember(result.token);

        expect(result.provisioned).to.equal(true);
        expect(after.id).to.equal(before.id);
        expect(after.secret).to.not.equal(before.secret);
        expect(after.status).to.equal(TokenStatus.TOKEN_STATUS_ACTIVE);
        await expectStoredMatches(after);
        const events = await eventsOf(service.db, request.userId);
        expect(events.map((e) => e.action)).to.deep.equal([
          "create",
          "regenerate",
        ]);
        expect(events[1].reason).to.equal(reason);
      });
    }

    it("returns a valid legacy token as it is", async () => {
      const request = ownerRequest();
      const legacy = randomBytes(16).toString("hex");
      const id = await insertToken(service.db, service.config, {
        userId: request.userId,
        kind: "default",
        secret: legacy,
      });

      const result = await rpc.getOrProvision(request);

      expect(result.provisioned).to.equal(false);
      expect(result.token!.id).to.equal(id);
      expect(result.token!.secret).to.equal(legacy);
      expect(result.token!.masked).to.equal(
        `${legacy.slice(0, 12)}...${legacy.slice(-4)}`,
      );
      expect(await eventsOf(service.db, request.userId)).to.have.length(0);
    });

    it("replaces an expired legacy token", async () => {
      const request = ownerRequest();
      const legacy = randomBytes(16).toString("hex");
      await insertToken(service.db, service.config, {
        userId: request.userId,
        kind: "default",
        secret: legacy,
        expiresAt: new Date(Date.now() - DAY_MS),
      });

      const result = await rpc.getOrProvision(request);
      remember(result.token);

      expect(result.provisioned).to.equal(true);
      expect(result.token!.secret).to.match(TOKEN_PATTERN);
      await expectStoredMatches(result.token!);
    });
  });

  describe("Delete", () => {
    it("deletes the token and records its masked form", async () => {
      const request = ownerRequest();
      const created = remember((await rpc.createDefault(request)).token);

      const { token } = await rpc.delete(request);

      expect(token!.id).to.equal(created.id);
      expect(token!.secret).to.equal("");
      expect(token!.masked).to.equal(created.masked);
      expect(await tokensOf(service.db, request.userId)).to.have.length(0);
      const events = await eventsOf(service.db, request.userId);
      expect(events.map((e) => e.action)).to.deep.equal(["create", "delete"]);
      expect(events[1].token_id).to.equal(created.id);
      expect(events[1].label).to.equal("Default");
      expect(events[1].masked).to.equal(created.masked);
    });

    it("returns NOT_FOUND for a missing token", async () => {
      const request = ownerRequest();

      const err = await callError(service.client, service.client.delete, {
        ...request,
        allowMissing: false,
      });

      expect(err.code).to.equal(status.NOT_FOUND);
      expect(err.details).to.contain("allow_missing");
      expect(await eventsOf(service.db, request.userId)).to.have.length(0);
    });

    it("returns OK when allow_missing is set", async () => {
      const request = { ...ownerRequest(), allowMissing: true };

      const response = await rpc.delete(request);

      expect(response.token).to.equal(undefined);
      expect(await eventsOf(service.db, request.userId)).to.have.length(0);
    });
  });

  describe("user keys", () => {
    it("survive every default-token RPC", async () => {
      const request = ownerRequest();
      const userSecret = `vtk_${randomBytes(32).toString("base64url")}`;
      const keyId = await insertToken(service.db, service.config, {
        userId: request.userId,
        kind: "user",
        label: "Default",
        secret: userSecret,
      });
      const [before] = await service.db("api_tokens").where({ id: keyId });

      const provisioned = await rpc.getOrProvision(request);
      remember(provisioned.token);
      const regenerated = await rpc.regenerate(request);
      remember(regenerated.token);
      const createErr = await callError(
        service.client,
        service.client.createDefault,
        request,
      );
      await rpc.delete(request);
      await rpc.delete({ ...withNewRequestId(request), allowMissing: true });
      const recreated = await rpc.createDefault(withNewRequestId(request));
      remember(recreated.token);

      expect(provisioned.token!.id).to.not.equal(keyId);
      expect(provisioned.token!.secret).to.not.equal(userSecret);
      expect(regenerated.token!.id).to.not.equal(keyId);
      expect(createErr.code).to.equal(status.ALREADY_EXISTS);
      const [after] = await service.db("api_tokens").where({ id: keyId });
      expect(after, "user key row").to.not.equal(undefined);
      expect(after.token_hash).to.equal(before.token_hash);
      expect(after.updated_at.getTime()).to.equal(before.updated_at.getTime());
      expect(after.kind).to.equal("user");
      const events = await eventsOf(service.db, request.userId);
      expect(events.filter((e) => e.token_id === keyId)).to.have.length(0);
    });
  });

  describe("request validation", () => {
    const cases: [string, object, string][] = [
      ["empty user_id", { userId: "" }, "user_id"],
      ["over-long user_id", { userId: "u".repeat(256) }, "user_id"],
      ["control character", { userId: "bob\u0007" }, "user_id"],
      ["zero-width character", { userId: "bo\u200bb" }, "user_id"],
      ["replacement character", { userId: "bob\ufffd" }, "user_id"],
      ["surrounding whitespace", { userId: " bob" }, "user_id"],
      ["decomposed accent", { userId: "cafe\u0301" }, "user_id"],
      ["leading combining mark", { userId: "\u0301bob" }, "user_id"],
      ["over-long org_id", { orgId: "o".repeat(256) }, "org_id"],
      ["newline in org_id", { orgId: "org\n1" }, "org_id"],
      [
        "invalid client_ip",
        {
          audit: {
            requestId: "r",
            actorId: "",
            clientIp: "10.0.0.1:443",
            userAgent: "",
          },
        },
        "audit.client_ip",
      ],
      [
        "over-long request_id",
        {
          audit: {
            requestId: "r".repeat(129),
            actorId: "",
            clientIp: "",
            userAgent: "",
          },
        },
        "audit.request_id",
      ],
      [
        "bidirectional override in user_agent",
        {
          audit: {
            requestId: "",
            actorId: "",
            clientIp: "",
            userAgent: "a\u202eb",
          },
        },
        "audit.user_agent",
      ],
      [
        "over-long user_agent",
        {
          audit: {
            requestId: "",
            actorId: "",
            clientIp: "",
            userAgent: "a".repeat(1025),
          },
        },
        "audit.user_agent",
      ],
    ];

    const methods = [
      "createDefault",
      "regenerate",
      "getOrProvision",
      "delete",
    ] as const;

    for (const [name, override, field] of cases) {
      it(`rejects ${name}`, async () => {
        const request = { ...ownerRequest(), ...override };

        for (const method of methods) {
          const err = await callError(
            service.client,
            service.client[method] as any,
            request,
          );
          expect(err.code, method).to.equal(status.INVALID_ARGUMENT);
          expect(violatedFields(err), method).to.deep.equal([field]);
          expect(err.details, method).to.contain(field);
        }
        const userId = (request as { userId: string }).userId;
        expect(await tokensOf(service.db, userId)).to.have.length(0);
        expect(await eventsOf(service.db, userId)).to.have.length(0);
      });
    }

    it("sends field violations without a reason", async () => {
      const err = await callError(
        service.client,
        service.client.getOrProvision,
        { ...ownerRequest(), userId: "" },
      );

      const [detail] = statusDetails(err)!.details;
      const [violation] = BadRequest.decode(detail.value).fieldViolations;
      expect(violation.field).to.equal("user_id");
      expect(violation.reason).to.equal("");
      expect(violation.localizedMessage).to.equal(undefined);
      expect(Buffer.from(detail.value).toString("latin1")).to.not.contain(
        "undefined",
      );
    });

    it("names every invalid field at once", async () => {
      const err = await callError(service.client, service.client.regenerate, {
        userId: "",
        orgId: "x".repeat(300),
        audit: undefined,
        gracePeriod: undefined,
      });

      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(violatedFields(err)).to.deep.equal(["user_id", "org_id"]);
    });

    it("reports x-client-service with other fields", async () => {
      const metadata = new Metadata();
      metadata.set("x-client-service", "bad name");

      const err = await callError(
        service.client,
        service.client.getOrProvision,
        { ...ownerRequest(), userId: "" },
        {},
        metadata,
      );

      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(violatedFields(err)).to.deep.equal([
        "user_id",
        "x-client-service",
      ]);
    });

    for (const [name, bytes, reason] of [
      ["invalid UTF-8", [0x0a, 0x03, 0x75, 0xff, 0x31], "not valid UTF-8"],
      ["truncated bytes", [0x0a, 0x05, 0x75], "not a valid protobuf encoding"],
    ] as const) {
      it(`rejects ${name} on the wire`, async () => {
        const err = await new Promise<ServiceError>((resolve) => {
          service.client.makeUnaryRequest(
            "/token.v1.TokenService/GetOrProvision",
            (body: Buffer) => body,
            (body: Buffer) => body,
            Buffer.from(bytes),
            (callErr) => resolve(callErr!),
          );
        });

        expect(err, "error").to.not.equal(null);
        expect(err.code).to.equal(status.INVALID_ARGUMENT);
        expect(violatedFields(err)).to.deep.equal(["request"]);
        expect(err.details).to.contain(reason);
        const logged = service.logs
          .entries()
          .filter(
            (e) => e.msg === "call finished" && e.code === "INVALID_ARGUMENT",
          );
        expect(logged.length).to.be.greaterThan(0);
        expect(logged.at(-1)!.invalidFields).to.deep.equal(["request"]);
      });
    }

    it("rejects an oversized request", async () => {
      const request = ownerRequest();
      request.audit.userAgent = "a".repeat(70_000);

      const err = await callError(
        service.client,
        service.client.getOrProvision,
        request,
      );

      expect(err.code).to.equal(status.RESOURCE_EXHAUSTED);
      expect(err.details).to.contain("GRPC_MAX_MESSAGE_BYTES");
      const logged = service.logs
        .entries()
        .filter(
          (e) => e.msg === "call finished" && e.code === "RESOURCE_EXHAUSTED",
        );
      expect(logged).to.have.length(1);
      expect(await tokensOf(service.db, request.userId)).to.have.length(0);
    });

    for (const [name, gracePeriod] of [
      ["grace period just over 24 hours", { seconds: 86_400, nanos: 1 }],
      ["negative grace period", { seconds: -1, nanos: 0 }],
      ["grace period nanos out of range", { seconds: 1, nanos: 2_000_000_000 }],
    ] as const) {
      it(`rejects a ${name}`, async () => {
        const request = { ...ownerRequest(), gracePeriod };

        const err = await callError(
          service.client,
          service.client.regenerate,
          request,
        );

        expect(err.code).to.equal(status.INVALID_ARGUMENT);
        expect(violatedFields(err)).to.deep.equal(["grace_period"]);
        expect(await tokensOf(service.db, request.userId)).to.have.length(0);
      });
    }

    it("rejects a malformed x-client-service on reads", async () => {
      const metadata = new Metadata();
      metadata.set("x-client-service", "bad name!");
      const request = { userId: "u-1", orgId: "" };

      const err = await callError(
        service.client,
        service.client.getDefault,
        request,
        {},
        metadata,
      );

      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(violatedFields(err)).to.deep.equal(["x-client-service"]);
      expect(err.details).to.contain('"bad name!"');
    });

    it("rejects a malformed x-client-service", async () => {
      const metadata = new Metadata();
      metadata.set("x-client-service", "bad name with spaces");

      const err = await callError(
        service.client,
        service.client.getOrProvision,
        ownerRequest(),
        {},
        metadata,
      );

      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(violatedFields(err)).to.deep.equal(["x-client-service"]);
    });
  });

  describe("logs", () => {
    it("hold no secret, hash or signature", async () => {
      const text = service.logs.lines.join("\n");
      expect(issued.size).to.be.greaterThan(10);

      for (const secret of issued) {
        expect(text).to.not.contain(secret);
        expect(text).to.not.contain(hashSecret(secret));
        expect(text).to.not.contain(secret.slice(4, 30));
      }
      expect(text).to.not.match(/sig_[0-9a-f]{64}/);
    });

    it("have one line per call with its code", async () => {
      const request = ownerRequest();
      const { token } = await rpc.getOrProvision(request);

      const lines = service.logs
        .entries()
        .filter(
          (e) => e.msg === "call finished" && e.userId === request.userId,
        );
      expect(lines).to.have.length(1);
      expect(lines[0].rpc).to.equal("GetOrProvision");
      expect(lines[0].code).to.equal("OK");
      expect(lines[0].requestId).to.equal(request.audit.requestId);
      expect(lines[0].durationMs).to.be.a("number");
      expect(lines[0].tokenId).to.equal(token!.id);
    });
  });
});
