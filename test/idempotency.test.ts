import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { SecretCipher } from "../src/tokens/cipher";
import { IdempotencyStore } from "../src/tokens/idempotency";
import { hashSecret } from "../src/tokens/secret";
import { eventsOf, tokensOf, violatedFields } from "./support/assertions";
import { clientServiceMetadata, recordQueries, rpcsOf } from "./support/rpc";
import { storedSecret } from "./support/rows";
import {
  callError,
  ownerRequest,
  startTestService,
  type TestService,
  withNewRequestId,
} from "./support/service";

const CONCURRENT_CALLS = 20;

describe("TokenService idempotent retries", () => {
  let service: TestService;
  let rpc: ReturnType<typeof rpcsOf>;

  before(async () => {
    // Concurrent calls under one request id queue on its key row; a long
    // lock timeout keeps a loaded test database from turning that into
    // ABORTED.
    service = await startTestService({ LOCK_TIMEOUT_MS: "15000" });
    rpc = rpcsOf(service);
  });

  after(async () => {
    await service.stop();
  });

  function keysOf(requestId: string): Promise<Record<string, any>[]> {
    return service.db("api_idempotency_keys").where({ request_id: requestId });
  }

  describe("CreateDefault", () => {
    it("replays the first secret", async () => {
      const request = ownerRequest();

      const first = await rpc.createDefault(request);
      const retry = await rpc.createDefault(request);

      expect(retry.token!.id).to.equal(first.token!.id);
      expect(retry.token!.secret).to.equal(first.token!.secret);
      expect(retry.token!.signature).to.equal(first.token!.signature);
      expect(retry.token!.createdAt!.getTime()).to.equal(
        first.token!.createdAt!.getTime(),
      );
      expect(await tokensOf(service.db, request.userId)).to.have.length(1);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });

    it("stores the response without a plain secret", async () => {
      const request = ownerRequest();
      const { token } = await rpc.createDefault(request);

      const [row] = await keysOf(request.audit.requestId);

      expect(row.rpc).to.equal("CreateDefault");
      expect(row.response).to.not.contain(token!.secret);
      expect(row.response).to.not.contain(hashSecret(token!.secret));
      expect(row.response).to.not.contain(token!.signature);
      expect(row.secret_key_id).to.equal("test1");
      expect(
        row.secret_ciphertext.includes(Buffer.from(token!.secret)),
      ).to.equal(false);
    });

    it("keeps request ids apart per user", async () => {
      const alice = ownerRequest();
      const bob = ownerRequest();
      bob.audit.requestId = alice.audit.requestId;

      const forAlice = await rpc.createDefault(alice);
      const forBob = await rpc.createDefault(bob);

      expect(forBob.token!.userId).to.equal(bob.userId);
      expect(forBob.token!.secret).to.not.equal(forAlice.token!.secret);
      expect(await tokensOf(service.db, bob.userId)).to.have.length(1);
    });

    it("remembers no failed call", async () => {
      const request = ownerRequest();
      await rpc.createDefault(request);
      const retry = withNewRequestId(request);

      const err = await callError(
        service.client,
        service.client.createDefault,
        retry,
      );

      expect(err.code).to.equal(status.ALREADY_EXISTS);
      expect(await keysOf(retry.audit.requestId)).to.have.length(0);
    });

    it("creates one token for concurrent calls", async () => {
      const request = ownerRequest();

      const responses = await Promise.all(
        Array.from({ length: CONCURRENT_CALLS }, () =>
          rpc.createDefault(request),
        ),
      );

      const secrets = new Set(responses.map((r) => r.token!.secret));
      expect(secrets.size).to.equal(1);
      const rows = await tokensOf(service.db, request.userId);
      expect(rows).to.have.length(1);
      expect(storedSecret(service.config, rows[0])).to.equal([...secrets][0]);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });
  });

  describe("Regenerate", () => {
    it("replays the first new secret", async () => {
      const request = ownerRequest();
      const { token: created } = await rpc.createDefault(request);
      const rotate = { ...withNewRequestId(request), gracePeriod: undefined };

      const first = await rpc.regenerate(rotate);
      const retry = await rpc.regenerate(rotate);

      expect(first.token!.secret).to.not.equal(created!.secret);
      expect(retry.token!.secret).to.equal(first.token!.secret);
      expect(retry.created).to.equal(false);
      const [row] = await tokensOf(service.db, request.userId);
      expect(storedSecret(service.config, row)).to.equal(first.token!.secret);
      const events = await eventsOf(service.db, request.userId);
      expect(events.map((e) => e.action)).to.deep.equal([
        "create",
        "regenerate",
      ]);
    });

    it("makes one change for concurrent calls", async () => {
      const request = ownerRequest();
      await rpc.createDefault(request);
      const rotate = withNewRequestId(request);

      const responses = await Promise.all(
        Array.from({ length: CONCURRENT_CALLS }, () => rpc.regenerate(rotate)),
      );

      const secrets = new Set(responses.map((r) => r.token!.secret));
      expect(secrets.size).to.equal(1);
      const [row] = await tokensOf(service.db, request.userId);
      expect(storedSecret(service.config, row)).to.equal([...secrets][0]);
      const events = await eventsOf(service.db, request.userId);
      expect(events.filter((e) => e.action === "regenerate")).to.have.length(1);
    });

    it("runs every call without a request_id", async () => {
      const request = ownerRequest();
      const anonymous = {
        ...request,
        audit: { ...request.audit, requestId: "" },
      };

      const first = await rpc.regenerate(anonymous);
      const second = await rpc.regenerate(anonymous);

      expect(second.token!.secret).to.not.equal(first.token!.secret);
      expect(await eventsOf(service.db, request.userId)).to.have.length(2);
    });

    it("replays the grace period end", async () => {
      const request = ownerRequest();
      await rpc.createDefault(request);
      const rotate = {
        ...withNewRequestId(request),
        gracePeriod: { seconds: 300, nanos: 0 },
      };

      const first = await rpc.regenerate(rotate);
      const retry = await rpc.regenerate(rotate);

      expect(first.graceEndsAt).to.not.equal(undefined);
      expect(retry.graceEndsAt!.getTime()).to.equal(
        first.graceEndsAt!.getTime(),
      );
    });
  });

  describe("GetOrProvision", () => {
    it("replays a provisioning call", async () => {
      const request = ownerRequest();

      const first = await rpc.getOrProvision(request);
      const retry = await rpc.getOrProvision(request);
      const later = await rpc.getOrProvision(withNewRequestId(request));

      expect(first.provisioned).to.equal(true);
      expect(retry.provisioned).to.equal(true);
      expect(retry.token!.secret).to.equal(first.token!.secret);
      expect(later.provisioned).to.equal(false);
      expect(later.token!.secret).to.equal(first.token!.secret);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });

    it("returns the current secret after a rotation", async () => {
      const request = ownerRequest();
      const first = await rpc.getOrProvision(request);
      const rotated = await rpc.regenerate(withNewRequestId(request));

      const retry = await rpc.getOrProvision(request);

      expect(first.provisioned).to.equal(true);
      expect(retry.token!.secret).to.equal(rotated.token!.secret);
      expect(retry.token!.secret).to.not.equal(first.token!.secret);
      expect(retry.provisioned).to.equal(false);
    });

    it("logs in anew after a Delete", async () => {
      const request = ownerRequest();
      const first = await rpc.getOrProvision(request);
      await rpc.delete({ ...withNewRequestId(request), allowMissing: false });

      const retry = await rpc.getOrProvision(request);

      expect(retry.provisioned).to.equal(true);
      expect(retry.token!.secret).to.not.equal(first.token!.secret);
      const [row] = await tokensOf(service.db, request.userId);
      expect(row.token_hash).to.equal(hashSecret(retry.token!.secret));
    });

    it("replaces a disabled token on retry", async () => {
      const request = ownerRequest();
      const first = await rpc.getOrProvision(request);
      await service
        .db("api_tokens")
        .where({ id: first.token!.id })
        .update({ disabled: true });

      const retry = await rpc.getOrProvision(request);

      expect(retry.provisioned).to.equal(true);
      expect(retry.token!.secret).to.not.equal(first.token!.secret);
      const events = await eventsOf(service.db, request.userId);
      expect(events.map((e) => e.reason)).to.deep.equal([
        "provision",
        "disabled",
      ]);
    });

    it("provisions once for concurrent calls", async () => {
      const request = ownerRequest();

      const responses = await Promise.all(
        Array.from({ length: CONCURRENT_CALLS }, () =>
          rpc.getOrProvision(request),
        ),
      );

      const secrets = new Set(responses.map((r) => r.token!.secret));
      expect(secrets.size).to.equal(1);
      expect(responses.every((r) => r.provisioned)).to.equal(true);
      expect(await tokensOf(service.db, request.userId)).to.have.length(1);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });

    it("replays in one query", async () => {
      const request = ownerRequest();
      const first = await rpc.getOrProvision(request);
      let retry: Awaited<ReturnType<typeof rpc.getOrProvision>>;

      const queries = await recordQueries(service, async () => {
        retry = await rpc.getOrProvision(request);
      });

      expect(queries).to.have.length(1);
      expect(retry!.provisioned).to.equal(true);
      expect(retry!.token!.secret).to.equal(first.token!.secret);
    });

    it("ignores the key of an old token", async () => {
      const request = ownerRequest();
      const { token } = await rpc.getOrProvision(request);
      const twoDaysAgo = new Date(Date.now() - 2 * 86_400_000);
      await service
        .db("api_tokens")
        .where({ id: token!.id })
        .update({ created_at: twoDaysAgo, updated_at: twoDaysAgo });
      let retry: Awaited<ReturnType<typeof rpc.getOrProvision>>;

      const queries = await recordQueries(service, async () => {
        retry = await rpc.getOrProvision(request);
      });

      expect(queries).to.have.length(1);
      expect(retry!.provisioned).to.equal(false);
      expect(retry!.token!.secret).to.equal(token!.secret);
    });
  });

  describe("Delete", () => {
    it("replays the deleted token", async () => {
      const request = ownerRequest();
      const { token } = await rpc.createDefault(request);
      const remove = { ...withNewRequestId(request), allowMissing: false };

      const first = await rpc.delete(remove);
      const retry = await rpc.delete(remove);

      expect(first.token!.id).to.equal(token!.id);
      expect(retry.token!.id).to.equal(token!.id);
      expect(retry.token!.masked).to.equal(token!.masked);
      const events = await eventsOf(service.db, request.userId);
      expect(events.map((e) => e.action)).to.deep.equal(["create", "delete"]);
    });

    it("replays an allow_missing success", async () => {
      const request = { ...ownerRequest(), allowMissing: true };

      const first = await rpc.delete(request);
      await rpc.createDefault(withNewRequestId(request));
      const retry = await rpc.delete(request);

      expect(first.token).to.equal(undefined);
      expect(retry.token).to.equal(undefined);
      expect(await tokensOf(service.db, request.userId)).to.have.length(1);
    });
  });

  describe("request_id reuse", () => {
    const changes: [string, (r: ReturnType<typeof ownerRequest>) => object][] =
      [
        [
          "user agent",
          (r) => ({ ...r, audit: { ...r.audit, userAgent: "x" } }),
        ],
      ];
    for (const [name, change] of changes) {
      it(`rejects a different ${name}`, async () => {
        const request = ownerRequest();
        await rpc.createDefault(request);

        const err = await callError(
          service.client,
          service.client.createDefault,
          change(request) as typeof request,
        );

        expect(err.code).to.equal(status.INVALID_ARGUMENT);
        expect(violatedFields(err)).to.deep.equal(["audit.request_id"]);
        expect(err.details).to.contain(request.audit.requestId);
      });
    }

    it("rejects a different grace_period", async () => {
      const request = ownerRequest();
      await rpc.regenerate(request);

      const err = await callError(service.client, service.client.regenerate, {
        ...request,
        gracePeriod: { seconds: 60, nanos: 0 },
      });

      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(violatedFields(err)).to.deep.equal(["audit.request_id"]);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });

    it("keeps each owner separate", async () => {
      const request = ownerRequest();
      await rpc.createDefault(request);

      const otherOrg = await rpc.createDefault({
        ...request,
        orgId: "org-other",
      });

      expect(otherOrg.token!.orgId).to.equal("org-other");
      expect(await tokensOf(service.db, request.userId)).to.have.length(2);
    });

    it("keeps each RPC separate", async () => {
      const request = ownerRequest();

      await rpc.createDefault(request);
      const regenerated = await rpc.regenerate(request);

      expect(regenerated.created).to.equal(false);
      expect(await eventsOf(service.db, request.userId)).to.have.length(2);
    });

    it("keeps each calling service separate", async () => {
      const request = ownerRequest();
      await rpc.createDefault(request, clientServiceMetadata("profile"));

      const err = await callError(
        service.client,
        service.client.createDefault,
        request,
        {},
        clientServiceMetadata("login"),
      );

      expect(err.code).to.equal(status.ALREADY_EXISTS);
    });

    it("runs again once the key expired", async () => {
      const request = ownerRequest();
      const first = await rpc.regenerate(request);
      await service
        .db("api_idempotency_keys")
        .where({ request_id: request.audit.requestId })
        .update({ expires_at: new Date(Date.now() - 1000) });

      const again = await rpc.regenerate(request);

      expect(again.token!.secret).to.not.equal(first.token!.secret);
      const [row] = await keysOf(request.audit.requestId);
      expect(row.expires_at.getTime()).to.be.greaterThan(Date.now());
      expect(await eventsOf(service.db, request.userId)).to.have.length(2);
    });
  });

  describe("logs", () => {
    it("contain no stored secret or hash", async () => {
      const rows = await service.db("api_tokens");
      const text = service.logs.lines.join("\n");

      expect(rows.length).to.be.greaterThan(10);
      expect(text).to.contain("replayed the stored response");
      for (const row of rows) {
        const secret = storedSecret(service.config, row);
        expect(text).to.not.contain(secret);
        expect(text).to.not.contain(hashSecret(secret));
      }
    });
  });

  describe("expired keys", () => {
    it("are deleted in batches", async () => {
      const past = new Date(Date.now() - 1000);
      const future = new Date(Date.now() + 60_000);
      const row = (requestId: string, expiresAt: Date) => ({
        client_service: "cleanup-test",
        rpc: "Delete",
        user_id: "cleanup-user",
        org_id: "",
        request_id: requestId,
        fingerprint: "0".repeat(64),
        response: "{}",
        created_at: past,
        expires_at: expiresAt,
      });
      await service
        .db("api_idempotency_keys")
        .insert([row("old-1", past), row("old-2", past), row("new", future)]);
      const store = new IdempotencyStore(
        new SecretCipher(service.config.keys.encryptionKey!),
        60,
      );

      const deleted = await store.deleteExpired(service.db);

      expect(deleted).to.be.at.least(2);
      const left = await service
        .db("api_idempotency_keys")
        .where({ client_service: "cleanup-test" })
        .pluck("request_id");
      expect(left).to.deep.equal(["new"]);
    });
  });
});
