import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import { eventsOf, tokensOf } from "../support/assertions";
import {
  ownerRequest,
  startTestService,
  type TestService,
} from "../support/service";
import { countStored, databaseName, tokenRpcs } from "./support/calls";
import { CaseFigures, codeOf } from "./support/figures";
import {
  installPlannedFaults,
  planAdvisoryLock,
  planFailures,
} from "./support/planned-faults";
import {
  lockTokenRow,
  lockWaiters,
  waitersBeforeRelease,
  waitFor,
} from "./support/waiting";

/** Log lines of the service with the given message. */
function logged(service: TestService, message: string) {
  return service.logs.entries().filter((entry) => entry.msg === message) as {
    err?: { code?: string };
    attempts?: number;
  }[];
}

/** Creates a user's default token and returns the request and token id. */
async function provision(service: TestService) {
  const request = ownerRequest();
  const { token } = await tokenRpcs(service.client).getOrProvision(request);
  return { request, tokenId: token!.id };
}

describe("locks and deadlines", () => {
  let service: TestService;

  afterEach(async () => {
    await service?.stop();
  });

  it("aborts Regenerate behind a held row lock", async () => {
    service = await startTestService({ LOCK_TIMEOUT_MS: "300" });
    const figures = new CaseFigures("Regenerate behind FOR UPDATE");
    const { request, tokenId } = await provision(service);
    const lock = await lockTokenRow(service.db, tokenId);

    const outcome = await figures.settle(
      tokenRpcs(service.client).regenerate(request),
    );
    const waiting = await lockWaiters(
      service.db,
      databaseName(service.databaseUrl),
    );
    await lock.release();

    figures.print(await countStored(service.db, request.userId));
    expect(outcome.ok, "call succeeded").to.equal(false);
    expect(codeOf(outcome)).to.equal("ABORTED");
    expect(waiting, "service sessions still waiting").to.equal(0);
    const failures = logged(service, "transaction failed");
    expect(failures.map((entry) => entry.err?.code)).to.deep.equal(["55P03"]);
  });

  it("ends a call at its deadline with nothing committed", async () => {
    // Lock and statement timeouts far past the deadline: only the deadline
    // cap on them can end the wait in time.
    service = await startTestService({
      LOCK_TIMEOUT_MS: "30000",
      STATEMENT_TIMEOUT_MS: "30000",
    });
    const figures = new CaseFigures("200 ms deadline behind FOR UPDATE");
    const { request, tokenId } = await provision(service);
    const [before] = await tokensOf(service.db, request.userId);
    const lock = await lockTokenRow(service.db, tokenId);

    const outcome = await figures.settle(
      tokenRpcs(service.client).regenerate(request, {
        deadline: Date.now() + 200,
      }),
    );
    await waitFor("the service to stop waiting for the lock", async () => {
      const waiting = await lockWaiters(
        service.db,
        databaseName(service.databaseUrl),
      );
      return waiting === 0;
    });
    await lock.release();

    const [after] = await tokensOf(service.db, request.userId);
    const events = await eventsOf(service.db, request.userId);
    figures.print(await countStored(service.db, request.userId));
    expect(codeOf(outcome)).to.equal("DEADLINE_EXCEEDED");
    expect(after.token_hash, "token hash").to.equal(before.token_hash);
    expect(after.updated_at, "updated_at").to.deep.equal(before.updated_at);
    expect(events.map((event) => event.action)).to.deep.equal(["create"]);
  });

  it("ends a login read at its deadline", async () => {
    service = await startTestService({
      LOCK_TIMEOUT_MS: "30000",
      STATEMENT_TIMEOUT_MS: "30000",
    });
    const figures = new CaseFigures("200 ms deadline behind a table lock");
    const { request } = await provision(service);
    const database = databaseName(service.databaseUrl);
    // GetOrProvision reads a valid token outside any transaction; only an
    // ACCESS EXCLUSIVE lock, as a migration takes, blocks that read.
    const other = await service.db.transaction();
    await other.raw("lock table api_tokens in access exclusive mode");

    const outcome = await figures.settle(
      tokenRpcs(service.client).getOrProvision(request, {
        deadline: Date.now() + 200,
      }),
    );
    const stillWaiting = await waitersBeforeRelease(
      service.db,
      database,
      async () => void (await other.commit()),
    );

    figures.print(await countStored(service.db, request.userId));
    expect(codeOf(outcome)).to.equal("DEADLINE_EXCEEDED");
    expect(stillWaiting, "service sessions still waiting").to.equal(0);
  });

  it("commits nothing for a cancelled call", async () => {
    // A lock timeout far past the wait bound below: only the cancel that
    // the server sends can end the waiting statement in time.
    service = await startTestService({ LOCK_TIMEOUT_MS: "30000" });
    const figures = new CaseFigures("client cancel behind FOR UPDATE");
    const { request, tokenId } = await provision(service);
    const [before] = await tokensOf(service.db, request.userId);
    const lock = await lockTokenRow(service.db, tokenId);
    const database = databaseName(service.databaseUrl);

    const pending = new Promise<void>((resolve) => {
      const call = service.client.regenerate(request, (err) => {
        figures.count(err ? status[err.code] : "OK");
        resolve();
      });
      void waitFor("the call to wait for the lock", async () => {
        return (await lockWaiters(service.db, database)) > 0;
      }).then(() => call.cancel());
    });
    figures.calls++;
    await pending;
    const stillWaiting = await waitersBeforeRelease(
      service.db,
      database,
      lock.release,
    );

    const [after] = await tokensOf(service.db, request.userId);
    const events = await eventsOf(service.db, request.userId);
    figures.print(await countStored(service.db, request.userId));
    expect(figures.countOf("CANCELLED"), "cancelled calls").to.equal(1);
    expect(stillWaiting, "service sessions still waiting").to.equal(0);
    expect(
      logged(service, "cancelled the statement of a gone call"),
      "cancel logged",
    ).to.have.length(1);
    expect(after.token_hash, "token hash").to.equal(before.token_hash);
    expect(events.map((event) => event.action)).to.deep.equal(["create"]);
  });
});

describe("retries", () => {
  let service: TestService;

  beforeEach(async () => {
    service = await startTestService({ TX_MAX_RETRIES: "3" });
    await installPlannedFaults(service.db);
  });

  afterEach(async () => {
    await service?.stop();
  });

  for (const sqlstate of ["40001", "40P01"]) {
    it(`retries ${sqlstate} and then succeeds`, async () => {
      const figures = new CaseFigures(`${sqlstate} twice, then OK`);
      const request = ownerRequest();
      await planFailures(service.db, request.userId, sqlstate, 2);

      const outcome = await figures.settle(
        tokenRpcs(service.client).regenerate(request),
      );

      const stored = await countStored(service.db, request.userId);
      figures.print(stored);
      expect(outcome.ok, "call succeeded").to.equal(true);
      expect(stored.tokens, "token rows").to.equal(1);
      expect(stored.events, "audit events").to.equal(1);
      const retries = logged(service, "retrying transaction after a conflict");
      expect(retries.map((entry) => entry.err?.code)).to.deep.equal([
        sqlstate,
        sqlstate,
      ]);
    });

    it(`returns ABORTED after retrying ${sqlstate}`, async () => {
      const figures = new CaseFigures(`${sqlstate} on every attempt`);
      const request = ownerRequest();
      await planFailures(service.db, request.userId, sqlstate, 1000);

      const outcome = await figures.settle(
        tokenRpcs(service.client).getOrProvision(request),
      );

      const stored = await countStored(service.db, request.userId);
      figures.print(stored);
      expect(codeOf(outcome)).to.equal("ABORTED");
      expect(stored.tokens, "token rows").to.equal(0);
      expect(stored.events, "audit events").to.equal(0);
      const retries = logged(service, "retrying transaction after a conflict");
      expect(retries, "retries").to.have.length(3);
      const [failure] = logged(service, "transaction failed");
      expect(failure.err?.code, "logged SQLSTATE").to.equal(sqlstate);
      expect(failure.attempts, "attempts").to.equal(4);
    });
  }

  it("retries a real deadlock", async () => {
    const figures = new CaseFigures("real deadlock, then OK");
    const { request, tokenId } = await provision(service);
    const advisoryKey = 4242;
    await planAdvisoryLock(service.db, request.userId, advisoryKey);
    const database = databaseName(service.databaseUrl);

    // The test takes the advisory lock first. The service then locks the
    // token row and waits for the advisory lock in the audit trigger, and
    // the test waits for the token row. The service waited first, so its
    // deadlock_timeout runs out first and PostgreSQL ends its transaction.
    const other = await service.db.transaction();
    await other.raw("select pg_advisory_xact_lock(?)", [advisoryKey]);
    const pending = figures.settle(
      tokenRpcs(service.client).regenerate(request),
    );
    await waitFor("the service to wait for the advisory lock", async () => {
      return (await lockWaiters(service.db, database)) > 0;
    });
    await other.raw("select id from api_tokens where id = ? for update", [
      tokenId,
    ]);
    await other.commit();
    const outcome = await pending;

    const stored = await countStored(service.db, request.userId);
    figures.print(stored);
    expect(outcome.ok, "call succeeded").to.equal(true);
    expect(stored.events, "audit events").to.equal(2);
    const retries = logged(service, "retrying transaction after a conflict");
    expect(retries.map((entry) => entry.err?.code)).to.deep.equal(["40P01"]);
  });
});
