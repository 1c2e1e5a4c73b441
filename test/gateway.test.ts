import { randomBytes, randomUUID } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import pino from "pino";
import { type Gateway, startGateway } from "../examples/gateway/server";
import { errorResponse } from "../examples/gateway/errors";
import { isCurrentToken } from "../examples/gateway/routes";
import {
  AbortedError,
  AlreadyExistsError,
  createTokenServiceClient,
  InternalError,
  NotFoundError,
  TokenServiceError,
  type TokenServiceClientOptions,
  type TypedTokenServiceClient,
  verifyTokenSignature,
} from "../src/client";
import { Token } from "../src/generated/token/v1/token_service";
import { hashSecret, signSecret } from "../src/tokens/secret";
import { eventsOf, tokensOf } from "./support/assertions";
import { freePort } from "./support/ports";
import {
  LogCapture,
  startTestService,
  type TestService,
} from "./support/service";

const TOKEN_PATTERN = /^vtk_[A-Za-z0-9_-]{43}$/;
const UUID_PATTERN =
  /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** An HTTP response with its JSON body parsed. */
interface JsonResponse {
  status: number;
  headers: Headers;
  body: any;
}

/** Options of one request to the gateway. */
interface RequestOptions {
  userId?: string;
  headers?: Record<string, string>;
  /** A value to send as JSON, or a string to send as it is. */
  body?: unknown;
}

describe("example gateway", () => {
  let service: TestService;
  let gateway: Gateway;
  const gatewayLogs = new LogCapture();
  const clients: TypedTokenServiceClient[] = [];
  const gateways: Gateway[] = [];
  // Every secret the gateway returned, to check the logs against.
  const issued = new Set<string>();

  function connect(
    options: Partial<TokenServiceClientOptions> = {},
  ): TypedTokenServiceClient {
    const client = createTokenServiceClient({
      address: `127.0.0.1:${service.app.port}`,
      clientService: "example-gateway",
      ...options,
    });
    clients.push(client);
    return client;
  }

  async function start(
    client: TypedTokenServiceClient,
    trustedProxyHops = 1,
  ): Promise<Gateway> {
    const started = await startGateway({
      client,
      signingSecret: service.config.keys.signingSecret!,
      log: pino({ level: "debug" }, gatewayLogs),
      trustedProxyHops,
      maxBodyBytes: 1024,
    });
    gateways.push(started);
    return started;
  }

  before(async () => {
    service = await startTestService();
    gateway = await start(connect());
  });

  after(async () => {
    for (const started of gateways) {
      await started.close();
    }
    for (const client of clients) {
      client.close();
    }
    await service.stop();
  });

  async function send(
    method: string,
    path: string,
    options: RequestOptions = {},
    target: Gateway = gateway,
  ): Promise<JsonResponse> {
    const headers: Record<string, string> = { ...options.headers };
    if (options.userId !== undefined) {
      headers["X-User-Id"] = options.userId;
    }
    let body: string | undefined;
    if (typeof options.body === "string") {
      body = options.body;
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers["Content-Type"] ??= "application/json";
    }

    const response = await fetch(`http://127.0.0.1:${target.port}${path}`, {
      method,
      headers,
      body,
    });
    const text = await response.text();
    const parsed = text === "" ? undefined : JSON.parse(text);
    if (parsed?.token?.secret) {
      issued.add(parsed.token.secret);
    }
    return { status: response.status, headers: response.headers, body: parsed };
  }

  function newUser(): string {
    return `user-${randomUUID()}`;
  }

  describe("POST /login", () => {
    it("provisions, then returns the same token", async () => {
      const userId = newUser();

      const first = await send("POST", "/login", { userId });
      const second = await send("POST", "/login", { userId });

      expect(first.status).to.equal(200);
      expect(first.body.provisioned).to.equal(true);
      expect(first.body.token.secret).to.match(TOKEN_PATTERN);
      expect(second.status).to.equal(200);
      expect(second.body.provisioned).to.equal(false);
      expect(second.body.token.id).to.equal(first.body.token.id);
      expect(second.body.token.secret).to.equal(first.body.token.secret);
      expect(
        verifyTokenSignature(
          first.body.token.secret,
          first.body.token.signature,
          service.config.keys.signingSecret!,
        ),
      ).to.equal(true);
      expect(first.headers.get("cache-control")).to.equal("no-store");
    });

    it("passes request id, IP and user agent", async () => {
      const userId = newUser();
      const requestId = `req-${randomUUID()}`;

      const response = await send("POST", "/login", {
        userId,
        headers: {
          "X-Request-Id": requestId,
          "User-Agent": "gateway-test/1.0",
          // With one trusted proxy, the entry that proxy appended is the
          // client; the entry before it could be forged by the client.
          "X-Forwarded-For": "198.51.100.1, 203.0.113.9",
        },
      });

      expect(response.status).to.equal(200);
      expect(response.headers.get("x-request-id")).to.equal(requestId);
      const [event] = await eventsOf(service.db, userId);
      expect(event.action).to.equal("create");
      expect(event.reason).to.equal("provision");
      expect(event.request_id).to.equal(requestId);
      expect(event.client_ip).to.equal("203.0.113.9");
      expect(event.user_agent).to.equal("gateway-test/1.0");
      expect(event.client_service).to.equal("example-gateway");
      expect(event.rpc).to.equal("GetOrProvision");
    });

    it("generates a missing request id", async () => {
      const userId = newUser();

      const response = await send("POST", "/login", { userId });

      const requestId = response.headers.get("x-request-id");
      expect(requestId).to.match(UUID_PATTERN);
      const [event] = await eventsOf(service.db, userId);
      expect(event.request_id).to.equal(requestId);
      expect(event.client_ip).to.equal("127.0.0.1");
    });

    it("ignores X-Forwarded-For without trusted proxies", async () => {
      const direct = await start(clients[0], 0);
      const userId = newUser();

      await send(
        "POST",
        "/login",
        { userId, headers: { "X-Forwarded-For": "203.0.113.9" } },
        direct,
      );

      const [event] = await eventsOf(service.db, userId);
      expect(event.client_ip).to.equal("127.0.0.1");
    });

    it("passes X-Org-Id as org_id", async () => {
      const userId = newUser();

      const response = await send("POST", "/login", {
        userId,
        headers: { "X-Org-Id": "org-7" },
      });

      expect(response.body.token.orgId).to.equal("org-7");
      const [row] = await tokensOf(service.db, userId);
      expect(row.org_id).to.equal("org-7");
    });
  });

  describe("POST /token/generate", () => {
    it("rotates the secret in place", async () => {
      const userId = newUser();
      const login = await send("POST", "/login", { userId });

      const response = await send("POST", "/token/generate", { userId });

      expect(response.status).to.equal(200);
      expect(response.body.created).to.equal(false);
      expect(response.body.token.id).to.equal(login.body.token.id);
      expect(response.body.token.secret).to.match(TOKEN_PATTERN);
      expect(response.body.token.secret).to.not.equal(login.body.token.secret);
      const actions = (await eventsOf(service.db, userId)).map((e) => e.action);
      expect(actions).to.deep.equal(["create", "regenerate"]);
    });

    it("creates a missing token", async () => {
      const userId = newUser();

      const response = await send("POST", "/token/generate", { userId });

      expect(response.status).to.equal(200);
      expect(response.body.created).to.equal(true);
      expect(response.body.token.secret).to.match(TOKEN_PATTERN);
    });
  });

  describe("PUT /profile", () => {
    it("deletes the token when empty", async () => {
      const userId = newUser();
      await send("POST", "/login", { userId });

      const deleted = await send("PUT", "/profile", {
        userId,
        body: { token: "" },
      });
      const again = await send("PUT", "/profile", {
        userId,
        body: { token: "" },
      });

      expect(deleted.status).to.equal(200);
      expect(deleted.body).to.deep.equal({ action: "deleted", token: null });
      expect(again.status).to.equal(200);
      expect(again.body).to.deep.equal({ action: "unchanged", token: null });
      expect(await tokensOf(service.db, userId)).to.have.length(0);
      const actions = (await eventsOf(service.db, userId)).map((e) => e.action);
      expect(actions).to.deep.equal(["create", "delete"]);
    });

    it("keeps an unchanged token", async function () {
      const userId = newUser();
      const login = await send("POST", "/login", { userId });

      const response = await send("PUT", "/profile", {
        userId,
        body: { token: login.body.token.secret },
      });

      expect(response.status).to.equal(200);
      expect(response.body.action).to.equal("unchanged");
      expect(response.body.token.id).to.equal(login.body.token.id);
      const actions = (await eventsOf(service.db, userId)).map((e) => e.action);
      expect(actions).to.deep.equal(["create"]);
    });

    it("regenerates on a different token", async function () {
      const userId = newUser();
      const login = await send("POST", "/login", { userId });
      const typed = `vtk_${randomBytes(32).toString("base64url")}`;

      const response = await send("PUT", "/profile", {
        userId,
        body: { token: typed },
      });

      expect(response.status).to.equal(200);
      expect(response.body.action).to.equal("regenerated");
      expect(response.body.token.id).to.equal(login.body.token.id);
      expect(response.body.token.secret).to.not.equal(login.body.token.secret);
      expect(response.body.token.secret).to.not.equal(typed);
      const [row] = await tokensOf(service.db, userId);
      expect(row.token_hash).to.not.equal(hashSecret(typed));
      const actions = (await eventsOf(service.db, userId)).map((e) => e.action);
      expect(actions).to.deep.equal(["create", "regenerate"]);
    });

    it("creates a token when none exists", async () => {
      const userId = newUser();

      const response = await send("PUT", "/profile", {
        userId,
        body: { token: "typed-by-hand" },
      });

      expect(response.status).to.equal(200);
      expect(response.body.action).to.equal("created");
      expect(response.body.token.secret).to.match(/^vtk_/);
      const actions = (await eventsOf(service.db, userId)).map((e) => e.action);
      expect(actions).to.deep.equal(["create"]);
    });

    it("rejects a body without token", async () => {
      const response = await send("PUT", "/profile", {
        userId: newUser(),
        body: { secret: "x" },
      });

      expect(response.status).to.equal(400);
      expect(response.body.error.code).to.equal("INVALID_ARGUMENT");
    });
  });

  describe("errors", () => {
    it("maps INVALID_ARGUMENT to 400 naming the field", async () => {
      const response = await send("POST", "/login", {
        userId: "u".repeat(256),
      });

      expect(response.status).to.equal(400);
      expect(response.body.error.code).to.equal("INVALID_ARGUMENT");
      expect(response.body.error.fieldViolations).to.have.length(1);
      const [violation] = response.body.error.fieldViolations;
      expect(violation.field).to.equal("user_id");
      expect(violation.header).to.equal("X-User-Id");
      expect(violation.description).to.match(/maximum is 255/);
    });

    it("rejects a missing X-User-Id with 401", async () => {
      const response = await send("POST", "/login");

      expect(response.status).to.equal(401);
      expect(response.body.error.code).to.equal("UNAUTHENTICATED");
    });

    it("rejects malformed JSON with 400", async () => {
      const response = await send("PUT", "/profile", {
        userId: newUser(),
        body: "{not json",
        headers: { "Content-Type": "application/json" },
      });

      expect(response.status).to.equal(400);
      expect(response.body.error.code).to.equal("INVALID_JSON");
    });

    it("rejects a body over the limit with 413", async () => {
      const response = await send("PUT", "/profile", {
        userId: newUser(),
        body: { token: "x".repeat(2048) },
      });

      expect(response.status).to.equal(413);
      expect(response.body.error.code).to.equal("BODY_TOO_LARGE");
    });

    it("rejects a body that is not JSON with 415", async () => {
      const response = await send("PUT", "/profile", {
        userId: newUser(),
        body: "token=x",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
      });

      expect(response.status).to.equal(415);
    });

    it("returns 404 and 405 for unknown routes", async () => {
      const missing = await send("GET", "/nowhere", { userId: newUser() });
      const wrongMethod = await send("GET", "/login", { userId: newUser() });

      expect(missing.status).to.equal(404);
      expect(wrongMethod.status).to.equal(405);
      expect(wrongMethod.headers.get("allow")).to.equal("POST");
    });

    it("maps UNAVAILABLE to 503 with Retry-After", async () => {
      const unreachable = await start(
        connect({
          address: `127.0.0.1:${await freePort()}`,
          retry: { maxAttempts: 2, initialBackoffMs: 10 },
        }),
      );

      const response = await send(
        "POST",
        "/login",
        { userId: newUser() },
        unreachable,
      );

      expect(response.status).to.equal(503);
      expect(response.headers.get("retry-after")).to.equal("1");
      expect(response.body.error.code).to.equal("UNAVAILABLE");
    });

    it("maps DEADLINE_EXCEEDED to 504", async () => {
      const impatient = await start(connect({ timeoutMs: 150 }));
      const userId = newUser();
      const login = await send("POST", "/login", { userId });

      const response = await service.db.transaction(async (trx) => {
        await trx("api_tokens").where({ id: login.body.token.id }).forUpdate();
        return send("POST", "/token/generate", { userId }, impatient);
      });

      expect(response.status).to.equal(504);
      expect(response.body.error.code).to.equal("DEADLINE_EXCEEDED");
    });

    it("maps the other typed errors", () => {
      const cases: [TokenServiceError, number, string][] = [
        [new NotFoundError("Delete", "missing"), 404, "NOT_FOUND"],
        [new AbortedError("Regenerate", "lock"), 409, "ABORTED"],
        [
          new AlreadyExistsError("CreateDefault", "exists"),
          409,
          "ALREADY_EXISTS",
        ],
        [new InternalError("Regenerate", "error id 1"), 500, "INTERNAL"],
        [
          new TokenServiceError(status.UNIMPLEMENTED, "GetDefault", "no"),
          501,
          "UNIMPLEMENTED",
        ],
      ];

      for (const [err, httpStatus, code] of cases) {
        const mapped = errorResponse(err, "error-1");

        expect(mapped.status, code).to.equal(httpStatus);
        expect(mapped.body.error.code, code).to.equal(code);
      }
    });

    it("hides internals in a 500", () => {
      const err = new Error("select * from api_tokens where token_hash = $1");

      const mapped = errorResponse(err, "error-1");

      expect(mapped.status).to.equal(500);
      expect(mapped.body.error.message).to.not.match(/select|api_tokens/);
      expect(mapped.body.error.message).to.contain("error-1");
    });
  });

  describe("logs", () => {
    it("hold no secret", () => {
      expect(issued.size).to.be.greaterThan(0);
      const lines = gatewayLogs.lines.join("\n");
      for (const secret of issued) {
        expect(lines).to.not.contain(secret);
      }
    });

    it("leave out the query string", async () => {
      const secret = `vtk_${randomBytes(32).toString("base64url")}`;

      await send("POST", `/login?token=${secret}`, { userId: newUser() });

      expect(gatewayLogs.lines.join("\n")).to.not.contain(secret);
    });

    it("have one line per request", () => {
      const finished = gatewayLogs
        .entries()
        .filter((entry) => entry.msg === "request finished");

      expect(finished.length).to.be.greaterThan(10);
      for (const entry of finished) {
        expect(entry.requestId, "requestId").to.be.a("string");
        expect(entry.status, "status").to.be.a("number");
      }
    });
  });
});

describe("isCurrentToken", () => {
  const signingSecret = randomBytes(32);
  const secret = `vtk_${randomBytes(32).toString("base64url")}`;
  const other = `vtk_${randomBytes(32).toString("base64url")}`;
  const signature = signSecret(secret, signingSecret);

  it("compares the secret when present", () => {
    const current = Token.fromPartial({ secret, signature });

    expect(isCurrentToken(secret, current, undefined)).to.equal(true);
    expect(isCurrentToken(other, current, undefined)).to.equal(false);
    expect(isCurrentToken("", current, undefined)).to.equal(false);
  });

  it("checks the signature without a secret", () => {
    const current = Token.fromPartial({ signature });

    expect(isCurrentToken(secret, current, signingSecret)).to.equal(true);
    expect(isCurrentToken(other, current, signingSecret)).to.equal(false);
  });

  it("throws without secret or signing secret", () => {
    const current = Token.fromPartial({ signature });

    expect(() => isCurrentToken(secret, current, undefined)).to.throw(
      /TOKEN_SIGNING_SECRET/,
    );
  });
});
