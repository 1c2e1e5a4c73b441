import { randomBytes, randomUUID } from "node:crypto";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import {
  AbortedError,
  AlreadyExistsError,
  backoffDelayMs,
  createTokenServiceClient,
  DeadlineExceededError,
  DEFAULT_RETRY_POLICY,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  TokenServiceError,
  type TokenServiceClientOptions,
  type TypedTokenServiceClient,
  UnavailableError,
  verifyTokenSignature,
} from "../src/client";
import {
  CreateDefaultRequest,
  CreateDefaultResponse,
} from "../src/generated/token/v1/token_service";
import { createLogger } from "../src/logger";
import { signSecret } from "../src/tokens/secret";
import { freePort } from "./support/ports";
import { eventsOf } from "./support/assertions";
import { insertToken } from "./support/rows";
import {
  makeCertificate,
  startTlsProxy,
  type TestCertificate,
  type TlsProxy,
} from "./support/tls";
import {
  LogCapture,
  ownerRequest,
  startTestService,
  type TestService,
} from "./support/service";

/** Lock wait the service allows before ABORTED, in milliseconds. */
const LOCK_TIMEOUT_MS = 400;

/** Awaits a call that must fail and returns its error. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected the call to fail, but it returned OK");
}

/** Counts the log lines that report a retry. */
function retriesIn(logs: LogCapture): number {
  return logs
    .entries()
    .filter((entry) => entry.msg === "call failed with UNAVAILABLE; retrying")
    .length;
}

/** Returns the service's call lines for one RPC and request id. */
function serverCallLines(
  service: TestService,
  rpc: string,
  requestId: string,
): Record<string, unknown>[] {
  return service.logs
    .entries()
    .filter(
      (entry) =>
        entry.msg === "call finished" &&
        entry.rpc === rpc &&
        entry.requestId === requestId,
    );
}

/**
 * Waits up to `timeoutMs` for the service's call line of one RPC and
 * request id, and returns its status code name.
 */
async function serverCode(
  service: TestService,
  rpc: string,
  requestId: string,
  timeoutMs = 2000,
): Promise<unknown> {
  const giveUpAt = Date.now() + timeoutMs;
  while (Date.now() < giveUpAt) {
    const [line] = serverCallLines(service, rpc, requestId);
    if (line) {
      return line.code;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`the service logged no ${rpc} call for ${requestId}`);
}

describe("createTokenServiceClient", () => {
  let service: TestService;
  let client: TypedTokenServiceClient;
  const clients: TypedTokenServiceClient[] = [];

  before(async () => {
    service = await startTestService({
      LOCK_TIMEOUT_MS: String(LOCK_TIMEOUT_MS),
    });
    client = connectTo(`127.0.0.1:${service.app.port}`);
  });

  after(async () => {
    for (const open of clients) {
      open.close();
    }
    await service.stop();
  });

  function connectTo(
    address: string,
    options: Partial<TokenServiceClientOptions> = {},
  ): TypedTokenServiceClient {
    const created = createTokenServiceClient({
      address,
      clientService: "client-test",
      ...options,
    });
    clients.push(created);
    return created;
  }

  /** Holds a row lock on the token until `work` settles. */
  async function whileLocked<T>(
    tokenId: string,
    work: () => Promise<T>,
  ): Promise<T> {
    return service.db.transaction(async (trx) => {
      await trx("api_tokens").where({ id: tokenId }).forUpdate();
      return work();
    });
  }

  describe("methods", () => {
    it("call the four RPCs", async () => {
      const request = ownerRequest();

      const created = await client.createDefault(request);
      const rotated = await client.regenerate(request);
      const provisioned = await client.getOrProvision(request);
      const deleted = await client.delete({ ...request, allowMissing: false });

      expect(rotated.token!.id).to.equal(created.token!.id);
      expect(rotated.token!.secret).to.not.equal(created.token!.secret);
      expect(provisioned.token!.secret).to.equal(rotated.token!.secret);
      expect(provisioned.provisioned).to.equal(false);
      expect(deleted.token!.id).to.equal(created.token!.id);
    });

    it("send x-client-service to the audit events", async () => {
      const request = ownerRequest();

      await client.createDefault(request);

      const [event] = await eventsOf(service.db, request.userId);
      expect(event.client_service).to.equal("client-test");
      expect(event.request_id).to.equal(request.audit.requestId);
    });

    it("fill unset request fields", async () => {
      const userId = `user-${randomUUID()}`;

      const response = await client.getOrProvision({ userId });

      expect(response.token!.orgId).to.equal("");
      const [event] = await eventsOf(service.db, userId);
      expect(event.request_id).to.equal("");
    });

    it("reject an invalid clientService at once", () => {
      expect(() =>
        createTokenServiceClient({
          address: "127.0.0.1:1",
          clientService: "has spaces",
        }),
      ).to.throw(TypeError, /clientService/);
    });
  });

  describe("typed errors", () => {
    const methods = [
      "createDefault",
      "regenerate",
      "getOrProvision",
      "delete",
    ] as const;
    for (const method of methods) {
      it(`${method} rejects with InvalidArgumentError`, async () => {
        const request = { ...ownerRequest(""), allowMissing: false };

        const err = await rejection(client[method](request));

        expect(err).to.be.instanceOf(InvalidArgumentError);
        const invalid = err as InvalidArgumentError;
        expect(invalid.code).to.equal(status.INVALID_ARGUMENT);
        expect(invalid.fieldViolations.map((v) => v.field)).to.deep.equal([
          "user_id",
        ]);
        expect(invalid.fieldViolations[0].description).to.match(/required/);
      });
    }

    it("lists every violated field", async () => {
      const request = ownerRequest("");
      request.audit.clientIp = "not an address";

      const err = (await rejection(
        client.regenerate(request),
      )) as InvalidArgumentError;

      expect(err.fieldViolations.map((v) => v.field)).to.deep.equal([
        "user_id",
        "audit.client_ip",
      ]);
    });

    it("carries the existing id in AlreadyExistsError", async () => {
      const request = ownerRequest();
      const { token } = await client.createDefault(request);
      // A new request id, so that no idempotent replay returns a stored response.
      const again = ownerRequest(request.userId);

      const err = await rejection(client.createDefault(again));

      expect(err).to.be.instanceOf(AlreadyExistsError);
      expect((err as AlreadyExistsError).code).to.equal(status.ALREADY_EXISTS);
      expect((err as AlreadyExistsError).tokenId).to.equal(token!.id);
    });

    it("rejects Delete of a missing token with NotFoundError", async () => {
      const request = { ...ownerRequest(), allowMissing: false };

      const err = await rejection(client.delete(request));

      expect(err).to.be.instanceOf(NotFoundError);
      expect((err as NotFoundError).code).to.equal(status.NOT_FOUND);
      expect((err as NotFoundError).method).to.equal("Delete");
    });

    it("rejects a lock wait past lock_timeout with AbortedError", async () => {
      const request = ownerRequest();
      const { token } = await client.createDefault(request);

      const err = await whileLocked(token!.id, () =>
        rejection(client.regenerate(request, { timeoutMs: 5000 })),
      );

      expect(err).to.be.instanceOf(AbortedError);
      expect((err as AbortedError).code).to.equal(status.ABORTED);
      expect(
        serverCallLines(service, "Regenerate", request.audit.requestId).length,
      ).to.equal(1);
    });

    it("rejects a corrupt stored secret with InternalError", async () => {
      const request = ownerRequest();
      const id = await insertToken(service.db, service.config, {
        userId: request.userId,
        kind: "default",
        secret: `vtk_${randomBytes(32).toString("base64url")}`,
      });
      await service
        .db("api_tokens")
        .where({ id })
        .update({ secret_ciphertext: randomBytes(64) });

      const err = await rejection(client.getOrProvision(request));

      expect(err).to.be.instanceOf(InternalError);
      const internal = err as InternalError;
      expect(internal.code).to.equal(status.INTERNAL);
      expect(internal.details).to.match(/error id [0-9a-f-]{36}/);
      expect(internal.details).to.not.match(/select|api_tokens|decrypt/i);
    });

    it("maps a missing GetDefault token to NotFoundError", async () => {
      const request = { userId: `user-${randomUUID()}`, orgId: "" };

      const err = await rejection(client.getDefault(request));

      expect(err).to.be.instanceOf(NotFoundError);
      expect((err as TokenServiceError).code).to.equal(status.NOT_FOUND);
    });
  });

  describe("deadline", () => {
    it("ends a call blocked on a row lock", async () => {
      const request = ownerRequest();
      const { token } = await client.createDefault(request);

      const startedAt = Date.now();
      const err = await whileLocked(token!.id, () =>
        rejection(client.regenerate(request, { timeoutMs: 150 })),
      );
      const elapsedMs = Date.now() - startedAt;

      expect(err).to.be.instanceOf(DeadlineExceededError);
      expect((err as DeadlineExceededError).code).to.equal(
        status.DEADLINE_EXCEEDED,
      );
      expect(elapsedMs).to.be.lessThan(LOCK_TIMEOUT_MS);
      // The service saw the deadline too: it stopped waiting for the lock
      // before its own lock_timeout and committed nothing.
      const code = await serverCode(
        service,
        "Regenerate",
        request.audit.requestId,
      );
      expect(code).to.equal("DEADLINE_EXCEEDED");
      const actions = (await eventsOf(service.db, request.userId)).map(
        (event) => event.action,
      );
      expect(actions).to.deep.equal(["create"]);
    });

    it("applies the client's default timeout", async () => {
      const shortClient = connectTo(`127.0.0.1:${service.app.port}`, {
        timeoutMs: 150,
      });
      const request = ownerRequest();
      const { token } = await shortClient.createDefault(request);

      const err = await whileLocked(token!.id, () =>
        rejection(shortClient.regenerate(request)),
      );

      expect(err).to.be.instanceOf(DeadlineExceededError);
    });

    it("rejects a non-positive timeout", async () => {
      const err = await rejection(
        client.regenerate(ownerRequest(), { timeoutMs: 0 }),
      );

      expect(err).to.be.instanceOf(RangeError);
    });
  });

  describe("retries", () => {
    it("stop after maxAttempts with UnavailableError", async () => {
      const logs = new LogCapture();
      const unreachable = connectTo(`127.0.0.1:${await freePort()}`, {
        timeoutMs: 5000,
        retry: { maxAttempts: 3, initialBackoffMs: 20, maxBackoffMs: 40 },
        log: createLogger("warn", logs),
      });

      const err = await rejection(unreachable.regenerate(ownerRequest()));

      expect(err).to.be.instanceOf(UnavailableError);
      expect((err as UnavailableError).code).to.equal(status.UNAVAILABLE);
      expect(retriesIn(logs)).to.equal(2);
    });

    it("never wait past the deadline", async () => {
      const logs = new LogCapture();
      const unreachable = connectTo(`127.0.0.1:${await freePort()}`, {
        timeoutMs: 300,
        retry: { maxAttempts: 50, initialBackoffMs: 200, maxBackoffMs: 200 },
        log: createLogger("warn", logs),
      });

      const startedAt = Date.now();
      const err = await rejection(unreachable.regenerate(ownerRequest()));
      const elapsedMs = Date.now() - startedAt;

      expect(err).to.be.instanceOf(TokenServiceError);
      expect((err as TokenServiceError).code).to.be.oneOf([
        status.UNAVAILABLE,
        status.DEADLINE_EXCEEDED,
      ]);
      expect(elapsedMs).to.be.lessThan(300 + 100);
      expect(retriesIn(logs)).to.be.lessThan(50);
    });

    it("reach a server that starts late", async () => {
      const port = await freePort();
      const logs = new LogCapture();
      const lateClient = connectTo(`127.0.0.1:${port}`, {
        timeoutMs: 20_000,
        // The 20 s deadline, not the attempts, bounds how long the call waits.
        retry: { maxAttempts: 400, initialBackoffMs: 50, maxBackoffMs: 200 },
        channelOptions: {
          "grpc.initial_reconnect_backoff_ms": 50,
          "grpc.max_reconnect_backoff_ms": 200,
        },
        log: createLogger("warn", logs),
      });
      const request = ownerRequest();

      const pending = lateClient.getOrProvision(request);
      await new Promise((resolve) => setTimeout(resolve, 400));
      const late = await startTestService({
        GRPC_ADDRESS: `127.0.0.1:${port}`,
      });
      try {
        const response = await pending;

        expect(response.provisioned).to.equal(true);
        expect(retriesIn(logs)).to.be.greaterThan(0);
        const events = await eventsOf(late.db, request.userId);
        expect(events).to.have.length(1);
      } finally {
        lateClient.close();
        await late.stop();
      }
    });

    it("skip INVALID_ARGUMENT", async () => {
      const logs = new LogCapture();
      const logged = connectTo(`127.0.0.1:${service.app.port}`, {
        log: createLogger("warn", logs),
      });
      const request = ownerRequest();
      request.audit.clientIp = "not an address";

      await rejection(logged.regenerate(request));

      expect(retriesIn(logs)).to.equal(0);
      expect(
        serverCallLines(service, "Regenerate", request.audit.requestId).length,
      ).to.equal(1);
    });
  });

  describe("tls", () => {
    let certificate: TestCertificate;
    const proxies: TlsProxy[] = [];

    before(function () {
      const made = makeCertificate();
      if (!made) {
        // NOTE: the TLS option is untested where openssl is not installed.
        this.skip();
      }
      certificate = made;
    });

    after(async () => {
      for (const proxy of proxies) {
        await proxy.close();
      }
    });

    async function tlsAddress(requireClientCert: boolean): Promise<string> {
      const proxy = await startTlsProxy(
        certificate,
        service.app.port,
        requireClientCert,
      );
      proxies.push(proxy);
      return `127.0.0.1:${proxy.port}`;
    }

    // Node.js deprecates an IP address as the TLS server name (DEP0123), so
    // the client sends the certificate's host name.
    const serverName = { "grpc.ssl_target_name_override": "localhost" };

    it("calls a server that chains to rootCerts", async () => {
      const address = await tlsAddress(false);
      const secure = connectTo(address, {
        tls: { rootCerts: certificate.cert },
        channelOptions: serverName,
      });
      const plain = connectTo(address, { retry: { maxAttempts: 1 } });

      const response = await secure.getOrProvision(ownerRequest());
      const err = await rejection(plain.getOrProvision(ownerRequest()));

      expect(response.provisioned).to.equal(true);
      expect(err).to.be.instanceOf(UnavailableError);
    });

    it("presents a client certificate", async () => {
      const address = await tlsAddress(true);
      const mutual = connectTo(address, {
        tls: {
          rootCerts: certificate.cert,
          privateKey: certificate.key,
          certChain: certificate.cert,
        },
        channelOptions: serverName,
      });
      const withoutCertificate = connectTo(address, {
        tls: { rootCerts: certificate.cert },
        channelOptions: serverName,
        retry: { maxAttempts: 1 },
      });

      const response = await mutual.getOrProvision(ownerRequest());
      const err = await rejection(
        withoutCertificate.getOrProvision(ownerRequest()),
      );

      expect(response.provisioned).to.equal(true);
      expect(err).to.be.instanceOf(UnavailableError);
    });
  });

  describe("backoffDelayMs", () => {
    it("grows to maxBackoffMs and stays there", () => {
      const bounds = [1, 2, 3, 4, 5].map((retry) =>
        backoffDelayMs(retry, DEFAULT_RETRY_POLICY, () => 0.999_999),
      );

      expect(bounds).to.deep.equal([99, 199, 399, 799, 999]);
    });

    it("can be 0 with full jitter", () => {
      expect(backoffDelayMs(3, DEFAULT_RETRY_POLICY, () => 0)).to.equal(0);
    });
  });
});

describe("verifyTokenSignature", () => {
  const signingSecret = randomBytes(32).toString("base64");
  const secret = `vtk_${randomBytes(32).toString("base64url")}`;
  const signature = signSecret(secret, Buffer.from(signingSecret, "utf8"));

  it("accepts the service's signature", () => {
    expect(verifyTokenSignature(secret, signature, signingSecret)).to.equal(
      true,
    );
  });

  it("accepts the signing secret as a Buffer", () => {
    const key = Buffer.from(signingSecret, "utf8");

    expect(verifyTokenSignature(secret, signature, key)).to.equal(true);
  });

  it("rejects another secret", () => {
    const other = `vtk_${randomBytes(32).toString("base64url")}`;

    expect(verifyTokenSignature(other, signature, signingSecret)).to.equal(
      false,
    );
  });

  it("rejects another signing secret", () => {
    const otherKey = randomBytes(32).toString("base64");

    expect(verifyTokenSignature(secret, signature, otherKey)).to.equal(false);
  });

  it("rejects a truncated signature", () => {
    expect(
      verifyTokenSignature(secret, signature.slice(0, -1), signingSecret),
    ).to.equal(false);
  });
});
