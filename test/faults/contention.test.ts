import { randomUUID } from "node:crypto";
import { expect } from "chai";
import type { Token } from "../../src/generated/token/v1/token_service";
import { hashSecret } from "../../src/tokens/secret";
import { eventsOf, tokensOf } from "../support/assertions";
import {
  ownerRequest,
  startTestService,
  type TestService,
  withNewRequestId,
} from "../support/service";
import { countStored, tokenRpcs, unauditedTokens } from "./support/calls";
import { CaseFigures, type Outcome } from "./support/figures";

type Rpc = "createDefault" | "regenerate" | "getOrProvision" | "delete";

/** One call of the mixed load: what it asked and how it ended. */
interface MixedCall {
  rpc: Rpc;
  requestId: string;
  outcome: Outcome<{ token?: Token; provisioned?: boolean }>;
}

/** Whether an OK response means the call changed the stored token. */
function changedSomething(call: MixedCall): boolean {
  if (!call.outcome.ok) {
    return false;
  }
  switch (call.rpc) {
    case "createDefault":
    case "regenerate":
      return true;
    case "getOrProvision":
      return call.outcome.value.provisioned === true;
    case "delete":
      return call.outcome.value.token !== undefined;
  }
}

describe("contention", () => {
  let service: TestService;

  afterEach(async () => {
    await service?.stop();
  });

  it("provisions one token for 500 logins", async () => {
    service = await startTestService({ LOG_LEVEL: "warn" });
    const rpcs = tokenRpcs(service.client);
    const request = ownerRequest();
    const figures = new CaseFigures("500 concurrent GetOrProvision");

    const outcomes = await Promise.all(
      Array.from({ length: 500 }, () =>
        // Separate logins: a shared request id would make them retries.
        figures.settle(rpcs.getOrProvision(withNewRequestId(request))),
      ),
    );

    const stored = await countStored(service.db, request.userId);
    figures.print(stored);
    expect(figures.errorCodes(), "error codes").to.deep.equal([]);
    const secrets = new Set(
      outcomes.map((outcome) => outcome.ok && outcome.value.token?.secret),
    );
    expect(secrets.size, "distinct secrets").to.equal(1);
    expect(stored.tokens, "token rows").to.equal(1);
    const events = await eventsOf(service.db, request.userId);
    expect(events.map((event) => event.action)).to.deep.equal(["create"]);
    const provisioned = outcomes.filter(
      (outcome) => outcome.ok && outcome.value.provisioned,
    );
    expect(provisioned, "responses with provisioned set").to.have.length(1);
  });

  it("keeps one audited token under 300 mixed calls", async () => {
    service = await startTestService({ LOG_LEVEL: "warn" });
    const rpcs = tokenRpcs(service.client);
    const userId = `user-${randomUUID()}`;
    const figures = new CaseFigures("300 concurrent mixed calls");
    const kinds: Rpc[] = [
      "createDefault",
      "regenerate",
      "getOrProvision",
      "delete",
    ];

    const calls = await Promise.all(
      Array.from({ length: 300 }, async (_, index): Promise<MixedCall> => {
        const rpc = kinds[index % kinds.length];
        const request = ownerRequest(userId);
        const requestId = request.audit.requestId;
        const outcome =
          rpc === "delete"
            ? await figures.settle(
                rpcs.delete({ ...request, allowMissing: index % 8 === 3 }),
              )
            : await figures.settle(rpcs[rpc](request));
        return { rpc, requestId, outcome };
      }),
    );

    const stored = await countStored(service.db, userId);
    figures.print(stored);
    expect(figures.errorCodes()).to.satisfy((codes: string[]) =>
      codes.every((code) =>
        ["ALREADY_EXISTS", "NOT_FOUND", "ABORTED"].includes(code),
      ),
    );

    const events = await eventsOf(service.db, userId);
    const changing = calls.filter(changedSomething);
    expect(events.length, "audit events").to.equal(changing.length);
    const eventRequestIds = events.map((event) => event.request_id).sort();
    const changingRequestIds = changing.map((call) => call.requestId).sort();
    expect(eventRequestIds, "request ids of events").to.deep.equal(
      changingRequestIds,
    );

    const tokens = await tokensOf(service.db, userId);
    expect(tokens.length, "default tokens").to.be.at.most(1);
    const last = events[events.length - 1];
    if (last.action === "delete") {
      expect(tokens, "tokens after a final delete").to.have.length(0);
      return;
    }
    const lastWrite = calls.find((call) => call.requestId === last.request_id);
    const secret = lastWrite?.outcome.ok && lastWrite.outcome.value.token;
    expect(tokens).to.have.length(1);
    expect(tokens[0].id, "token id").to.equal(last.token_id);
    expect(tokens[0].token_hash, "hash of the last secret").to.equal(
      hashSecret(secret ? secret.secret : ""),
    );
    expect(await unauditedTokens(service.db)).to.deep.equal([]);
  });

  it("finishes 40 mutating calls on 2 connections", async () => {
    service = await startTestService({ LOG_LEVEL: "warn", DB_POOL_MAX: "2" });
    const rpcs = tokenRpcs(service.client);
    const figures = new CaseFigures("40 mutating calls, pool of 2");
    const users = Array.from({ length: 8 }, () => `user-${randomUUID()}`);

    // Every call must finish; the deadline only bounds a hung pool.
    const deadline = () => Date.now() + 60_000;
    const outcomes = await Promise.all(
      Array.from({ length: 40 }, (_, index) => {
        const request = ownerRequest(users[index % users.length]);
        const options = { deadline: deadline() };
        return index % 2 === 0
          ? figures.settle(rpcs.regenerate(request, options))
          : figures.settle(rpcs.getOrProvision(request, options));
      }),
    );

    const stored = await countStored(service.db);
    figures.print(stored);
    expect(outcomes).to.have.length(40);
    expect(figures.errorCodes(), "error codes").to.deep.equal([]);
    expect(stored.tokens, "token rows").to.equal(users.length);
    expect(await unauditedTokens(service.db)).to.deep.equal([]);
  });
});
