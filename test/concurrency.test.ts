import { expect } from "chai";
import {
  type GetOrProvisionResponse,
  type Token,
  type ValidateTokenResponse,
  ValidationResult,
} from "../src/generated/token/v1/token_service";
import { hashSecret } from "../src/tokens/secret";
import { eventsOf, tokensOf } from "./support/assertions";
import { recordQueries } from "./support/rpc";
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

    it("gives 50 owners each their own token", async () => {
      const requests = Array.from({ length: CALLERS }, () => ownerRequest());
      const created = await Promise.all(
        requests.map((request) =>
          call(service.client, service.client.createDefault, request),
        ),
      );

      let responses: GetOrProvisionResponse[] = [];
      const queries = await recordQueries(service, async () => {
        responses = await Promise.all(
          requests.map((request) =>
            call(
              service.client,
              service.client.getOrProvision,
              withNewRequestId(request),
            ),
          ),
        );
      });

      responses.forEach((response, index) => {
        expect(response.provisioned).to.equal(false);
        expect(response.token!.userId).to.equal(requests[index].userId);
        expect(response.token!.secret).to.equal(created[index].token!.secret);
      });
      // Concurrent logins share statements: fewer reads than callers.
      expect(queries.length).to.be.above(0);
      expect(queries.length).to.be.below(CALLERS);
    });
  });

  describe("ValidateToken", () => {
    it("validates 50 secrets each for its owner", async () => {
      const requests = Array.from({ length: CALLERS / 2 }, () =>
        ownerRequest(),
      );
      const created = await Promise.all(
        requests.map((request) =>
          call(service.client, service.client.createDefault, request),
        ),
      );
      const unknown = requests.map(
        (_, index) => `vtk_${String(index).padStart(43, "x")}`,
      );
      const secrets = [
        ...created.map((response) => response.token!.secret),
        ...unknown,
      ];

      let responses: ValidateTokenResponse[] = [];
      const queries = await recordQueries(service, async () => {
        responses = await Promise.all(
          secrets.map((secret) =>
            call(service.client, service.client.validateToken, {
              secret,
            }),
          ),
        );
      });

      responses.forEach((response, index) => {
        if (index < requests.length) {
          expect(response.result).to.equal(
            ValidationResult.VALIDATION_RESULT_VALID,
          );
          expect(response.userId).to.equal(requests[index].userId);
        } else {
          expect(response.result).to.equal(
            ValidationResult.VALIDATION_RESULT_NOT_FOUND,
          );
          expect(response.userId).to.equal("");
        }
      });
      // Concurrent cache misses share statements: fewer reads than callers.
      const reads = queries.filter((sql) => sql.startsWith("select"));
      expect(reads.length).to.be.above(0);
      expect(reads.length).to.be.below(CALLERS);
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
