import { expect } from "chai";
import type { Token } from "../src/generated/token/v1/token_service";
import { hashSecret } from "../src/tokens/secret";
import { eventsOf, tokensOf } from "./support/assertions";
import {
  call,
  ownerRequest,
  startTestService,
  type TestService,
  withNewRequestId,
} from "./support/service";

// Each caller sends its own audit.request_id: calls that share one are
// retries of a single request, and replay its first response.

const CALLERS = 50;

describe("TokenService under concurrency", () => {
  let service: TestService;

  before(async () => {
    service = await startTestService();
  });

  after(async () => {
    await service.stop();
  });

  describe("GetOrProvision", () => {
    it("creates one token for 50 callers", async () => {
      const request = ownerRequest(undefined, "org-concurrent");

      const responses = await Promise.all(
        Array.from({ length: CALLERS }, () =>
          call(
            service.client,
            service.client.getOrProvision,
            withNewRequestId(request),
          ),
        ),
      );

      const secrets = new Set(responses.map((r) => r.token!.secret));
      expect(secrets.size).to.equal(1);
      expect(responses.filter((r) => r.provisioned)).to.have.length(1);
      const rows = await tokensOf(service.db, request.userId);
      expect(rows).to.have.length(1);
      expect(rows[0].token_hash).to.equal(hashSecret([...secrets][0]));
      const events = await eventsOf(service.db, request.userId);
      expect(events).to.have.length(1);
      expect(events[0].action).to.equal("create");
    });
  });

  describe("Regenerate", () => {
    it("keeps the hash of one returned secret", async () => {
      const request = ownerRequest();
      await call(service.client, service.client.createDefault, request);

      const responses = await Promise.all(
        Array.from({ length: CALLERS }, () =>
          call(
            service.client,
            service.client.regenerate,
            withNewRequestId(request),
          ),
        ),
      );

      const tokens: Token[] = responses.map((r) => r.token!);
      expect(new Set(tokens.map((t) => t.secret)).size).to.equal(CALLERS);
      expect(new Set(tokens.map((t) => t.id)).size).to.equal(1);
      const rows = await tokensOf(service.db, request.userId);
      expect(rows).to.have.length(1);
      const hashes = tokens.map((t) => hashSecret(t.secret));
      expect(hashes).to.include(rows[0].token_hash);
      const events = await eventsOf(service.db, request.userId);
      const regenerated = events.filter((e) => e.action === "regenerate");
      expect(regenerated).to.have.length(CALLERS);
    });

    it("creates one token for 50 callers when missing", async () => {
      const request = ownerRequest();

      const responses = await Promise.all(
        Array.from({ length: CALLERS }, () =>
          call(
            service.client,
            service.client.regenerate,
            withNewRequestId(request),
          ),
        ),
      );

      expect(responses.filter((r) => r.created)).to.have.length(1);
      const rows = await tokensOf(service.db, request.userId);
      expect(rows).to.have.length(1);
      const events = await eventsOf(service.db, request.userId);
      expect(events.filter((e) => e.action === "create")).to.have.length(1);
      expect(events.filter((e) => e.action === "regenerate")).to.have.length(
        CALLERS - 1,
      );
    });
  });
});
