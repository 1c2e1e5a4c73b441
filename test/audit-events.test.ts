import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import {
  AuditAction,
  type AuditEvent,
  AuditReason,
  TokenKind,
  TokenStatus,
} from "../src/generated/token/v1/token_service";
import { hashSecret } from "../src/tokens/secret";
import { eventsOf, tokensOf, violatedFields } from "./support/assertions";
import { clientServiceMetadata, rpcsOf } from "./support/rpc";
import { insertToken } from "./support/rows";
import {
  callError,
  ownerRequest,
  startTestService,
  type TestService,
  withNewRequestId,
} from "./support/service";

describe("TokenService", () => {
  let service: TestService;
  let rpc: ReturnType<typeof rpcsOf>;

  before(async () => {
    service = await startTestService();
    rpc = rpcsOf(service);
  });

  after(async () => {
    await service.stop();
  });

  /** Inserts `count` audit event rows for an owner, straight into the table. */
  async function insertEvents(userId: string, count: number): Promise<void> {
    const rows = Array.from({ length: count }, () => ({
      token_id: "00000000-0000-4000-8000-000000000000",
      user_id: userId,
      org_id: "",
      action: "regenerate",
      label: "Default",
      kind: "default",
      masked: "vtk_AAAAAAAA...AAAA",
      rpc: "Regenerate",
      created_at: new Date(),
    }));
    await service.db("api_token_events").insert(rows);
  }

  async function listAll(
    userId: string,
    pageSize: number,
  ): Promise<{ pages: AuditEvent[][]; lastToken: string }> {
    const pages: AuditEvent[][] = [];
    let pageToken = "";
    do {
      const page = await rpc.listAuditEvents({ userId, pageSize, pageToken });
      pages.push(page.events);
      pageToken = page.nextPageToken;
    } while (pageToken !== "" && pages.length < 100);
    return { pages, lastToken: pageToken };
  }

  describe("ListAuditEvents", () => {
    it("returns every field, newest first", async () => {
      const request = ownerRequest();
      const { token: created } = await rpc.createDefault(
        request,
        clientServiceMetadata("profile-gateway"),
      );
      const { token: rotated } = await rpc.regenerate({
        ...withNewRequestId(request),
        gracePeriod: { seconds: 90, nanos: 500_000_000 },
      });

      const { events, nextPageToken } = await rpc.listAuditEvents({
        userId: request.userId,
      });

      expect(nextPageToken).to.equal("");
      expect(events.map((e) => e.action)).to.deep.equal([
        AuditAction.AUDIT_ACTION_REGENERATE,
        AuditAction.AUDIT_ACTION_CREATE,
      ]);
      const [regenerate, create] = events;
      expect(Number(regenerate.id)).to.be.greaterThan(Number(create.id));
      expect(create.tokenId).to.equal(created!.id);
      expect(create.reason).to.equal(AuditReason.AUDIT_REASON_UNSPECIFIED);
      expect(create.label).to.equal("Default");
      expect(create.kind).to.equal(TokenKind.TOKEN_KIND_DEFAULT);
      expect(create.masked).to.equal(created!.masked);
      expect(create.rpc).to.equal("CreateDefault");
      expect(create.clientService).to.equal("profile-gateway");
      expect(create.requestId).to.equal(request.audit.requestId);
      expect(create.clientIp).to.equal("203.0.113.7");
      expect(create.userAgent).to.equal("mocha");
      expect(create.actorId).to.equal("");
      expect(create.createdAt).to.be.instanceOf(Date);
      expect(create.gracePeriod).to.equal(undefined);
      expect(regenerate.masked).to.equal(rotated!.masked);
      expect(regenerate.gracePeriod).to.deep.equal({
        seconds: 90,
        nanos: 500_000_000,
      });
    });

    it("reports the provisioning reason", async () => {
      const request = ownerRequest();
      await rpc.getOrProvision(request);

      const { events } = await rpc.listAuditEvents({ userId: request.userId });

      expect(events).to.have.length(1);
      expect(events[0].reason).to.equal(AuditReason.AUDIT_REASON_PROVISION);
    });

    it("contains no secret, hash or signature", async () => {
      const request = ownerRequest();
      const { token } = await rpc.createDefault(request);
      await rpc.delete(withNewRequestId(request));

      const response = await rpc.listAuditEvents({ userId: request.userId });

      const text = JSON.stringify(response);
      expect(response.events).to.have.length(2);
      expect(text).to.not.contain(token!.secret);
      expect(text).to.not.contain(hashSecret(token!.secret));
      expect(text).to.not.contain(token!.signature);
    });

    it("pages through every event once", async () => {
      const userId = ownerRequest().userId;
      await insertEvents(userId, 23);
      const stored = await eventsOf(service.db, userId);

      const { pages } = await listAll(userId, 5);

      expect(pages.map((p) => p.length)).to.deep.equal([5, 5, 5, 5, 3]);
      const ids = pages.flat().map((e) => e.id);
      expect(ids).to.deep.equal(stored.map((e) => String(e.id)).reverse());
    });

    it("ends without a token on a full last page", async () => {
      const userId = ownerRequest().userId;
      await insertEvents(userId, 6);

      const { pages } = await listAll(userId, 3);

      expect(pages.map((p) => p.length)).to.deep.equal([3, 3]);
    });

    it("uses 50 when page_size is 0", async () => {
      const userId = ownerRequest().userId;
      await insertEvents(userId, 51);

      const first = await rpc.listAuditEvents({ userId, pageSize: 0 });

      expect(first.events).to.have.length(50);
      expect(first.nextPageToken).to.not.equal("");
    });

    it("accepts page_size 500", async () => {
      const userId = ownerRequest().userId;
      await insertEvents(userId, 2);

      const page = await rpc.listAuditEvents({ userId, pageSize: 500 });

      expect(page.events).to.have.length(2);
    });

    it("keeps each org_id separate", async () => {
      const request = ownerRequest();
      await rpc.createDefault(request);
      await rpc.createDefault({ ...withNewRequestId(request), orgId: "o-2" });

      const noOrg = await rpc.listAuditEvents({ userId: request.userId });
      const inOrg = await rpc.listAuditEvents({
        userId: request.userId,
        orgId: "o-2",
      });

      expect(noOrg.events).to.have.length(1);
      expect(inOrg.events).to.have.length(1);
      expect(inOrg.events[0].tokenId).to.not.equal(noOrg.events[0].tokenId);
    });

    for (const pageSize of [-1, 501]) {
      it(`rejects page_size ${pageSize}`, async () => {
        const err = await callError(
          service.client,
          service.client.listAuditEvents,
          { userId: "u", orgId: "", pageSize, pageToken: "" },
        );

        expect(err.code).to.equal(status.INVALID_ARGUMENT);
        expect(violatedFields(err)).to.deep.equal(["page_size"]);
      });
    }

    it("rejects an invalid user_id", async () => {
      const err = await callError(
        service.client,
        service.client.listAuditEvents,
        { userId: "", orgId: "", pageSize: 0, pageToken: "" },
      );

      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(violatedFields(err)).to.deep.equal(["user_id"]);
    });

    describe("page_token", () => {
      let userId: string;
      let validToken: string;

      before(async () => {
        userId = ownerRequest().userId;
        await insertEvents(userId, 4);
        const first = await rpc.listAuditEvents({ userId, pageSize: 2 });
        validToken = first.nextPageToken;
      });

      function altered(token: string): string {
        const text = Buffer.from(token, "base64url").toString("utf8");
        const [id, mac] = text.split(".");
        const forged = `${Number(id) + 1}.${mac}`;
        return Buffer.from(forged, "utf8").toString("base64url");
      }

      const cases: [string, () => { userId: string; pageToken: string }][] = [
        ["garbage", () => ({ userId, pageToken: "!!not-a-token!!" })],
        [
          "a made-up id",
          () => ({
            userId,
            pageToken: Buffer.from("5").toString("base64url"),
          }),
        ],
        ["an altered id", () => ({ userId, pageToken: altered(validToken) })],
        [
          "another owner's token",
          () => ({ userId: `${userId}-x`, pageToken: validToken }),
        ],
        [
          "a truncated token",
          () => ({ userId, pageToken: validToken.slice(0, -3) }),
        ],
      ];
      for (const [name, request] of cases) {
        it(`rejects ${name}`, async () => {
          const err = await callError(
            service.client,
            service.client.listAuditEvents,
            { orgId: "", pageSize: 2, ...request() },
          );

          expect(err.code).to.equal(status.INVALID_ARGUMENT);
          expect(violatedFields(err)).to.deep.equal(["page_token"]);
          expect(err.details).to.contain("page_token");
        });
      }

      it("accepts its own token", async () => {
        const next = await rpc.listAuditEvents({
          userId,
          pageSize: 2,
          pageToken: validToken,
        });

        expect(next.events).to.have.length(2);
      });
    });
  });

  describe("GetDefault", () => {
    it("returns the token with its secret", async () => {
      const request = ownerRequest(undefined, "org-9");
      const { token: created } = await rpc.createDefault(request);

      const { token } = await rpc.getDefault(request);

      expect(token!.id).to.equal(created!.id);
      expect(token!.secret).to.equal(created!.secret);
      expect(token!.signature).to.equal(created!.signature);
      expect(token!.status).to.equal(TokenStatus.TOKEN_STATUS_ACTIVE);
      expect(token!.expiresAt!.getTime()).to.equal(
        created!.expiresAt!.getTime(),
      );
    });

    it("returns an expired token without replacing it", async () => {
      const request = ownerRequest();
      const { token: created } = await rpc.createDefault(request);
      await service
        .db("api_tokens")
        .where({ id: created!.id })
        .update({ expires_at: new Date(Date.now() - 1000) });

      const { token } = await rpc.getDefault(request);

      expect(token!.status).to.equal(TokenStatus.TOKEN_STATUS_EXPIRED);
      expect(token!.secret).to.equal(created!.secret);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });

    it("returns a disabled token as DISABLED", async () => {
      const request = ownerRequest();
      const { token: created } = await rpc.createDefault(request);
      await service
        .db("api_tokens")
        .where({ id: created!.id })
        .update({ disabled: true });

      const { token } = await rpc.getDefault(request);

      expect(token!.status).to.equal(TokenStatus.TOKEN_STATUS_DISABLED);
    });

    it("returns NOT_FOUND without provisioning", async () => {
      const request = ownerRequest();

      const err = await callError(service.client, service.client.getDefault, {
        userId: request.userId,
        orgId: "",
      });

      expect(err.code).to.equal(status.NOT_FOUND);
      expect(err.details).to.contain("GetOrProvision");
      expect(await tokensOf(service.db, request.userId)).to.have.length(0);
      expect(await eventsOf(service.db, request.userId)).to.have.length(0);
    });

    it("ignores a user key labelled Default", async () => {
      const request = ownerRequest();
      await insertToken(service.db, service.config, {
        userId: request.userId,
        kind: "user",
        secret: `vtk_${"A".repeat(43)}`,
      });

      const err = await callError(service.client, service.client.getDefault, {
        userId: request.userId,
        orgId: "",
      });

      expect(err.code).to.equal(status.NOT_FOUND);
    });

    it("rejects an invalid org_id", async () => {
      const err = await callError(service.client, service.client.getDefault, {
        userId: "u",
        orgId: "org\n1",
      });

      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(violatedFields(err)).to.deep.equal(["org_id"]);
    });
  });
});
