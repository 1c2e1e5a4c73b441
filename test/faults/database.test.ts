import { randomUUID } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { credentials } from "@grpc/grpc-js";
import { expect } from "chai";
import type { Knex } from "knex";
import { type App, startApp } from "../../src/app";
import { loadConfig } from "../../src/config";
import {
  type Token,
  TokenServiceClient,
} from "../../src/generated/token/v1/token_service";
import { createLogger } from "../../src/logger";
import { eventsOf } from "../support/assertions";
import { connect } from "../support/database";
import {
  LogCapture,
  ownerRequest,
  startTestService,
  testEnvironment,
  type TestService,
  withNewRequestId,
} from "../support/service";
import { countStored, databaseName, tokenRpcs } from "./support/calls";
import { CaseFigures, codeOf } from "./support/figures";
import { HealthProbe } from "./support/health";
import { PrivatePostgres } from "./support/private-postgres";
import { lockTokenRow, lockWaiters, waitFor } from "./support/waiting";

/** Ends the service's sessions on one database; returns how many. */
async function terminateServiceSessions(
  db: Knex,
  database: string,
  onlyWaiting = false,
): Promise<number> {
  const { rows } = await db.raw(
    `select pg_terminate_backend(pid) as ended from pg_stat_activity
     where datname = ? and application_name = 'token-service'
       and (not ? or wait_event_type = 'Lock')`,
    [database, onlyWaiting],
  );
  return rows.length;
}

/** Whether a Regenerate or GetOrProvision response changed the token. */
function changedToken(response: object): boolean {
  return (
    "created" in response ||
    ("provisioned" in response && response.provisioned === true)
  );
}

describe("database faults", () => {
  describe("pg_terminate_backend", () => {
    let service: TestService;

    afterEach(async () => {
      await service?.stop();
    });

    it("recovers from ended idle sessions", async () => {
      service = await startTestService();
      const rpcs = tokenRpcs(service.client);
      const figures = new CaseFigures("terminate idle sessions");
      const request = ownerRequest();
      const database = databaseName(service.databaseUrl);
      await figures.settle(rpcs.regenerate(request));

      const ended = await terminateServiceSessions(service.db, database);
      await waitFor("the sessions to end", async () => {
        const { rows } = await service.db.raw(
          `select count(*)::int as n from pg_stat_activity
           where datname = ? and application_name = 'token-service'`,
          [database],
        );
        return rows[0].n === 0;
      });
      const next = await figures.settle(
        rpcs.regenerate(withNewRequestId(request)),
      );

      figures.print(await countStored(service.db, request.userId));
      expect(ended, "sessions ended").to.be.greaterThan(0);
      expect(next.ok, "next call succeeded").to.equal(true);
    });

    it("recovers from a session ended mid-transaction", async () => {
      service = await startTestService({ LOCK_TIMEOUT_MS: "20000" });
      const rpcs = tokenRpcs(service.client);
      const figures = new CaseFigures("terminate mid-transaction");
      const request = ownerRequest();
      const database = databaseName(service.databaseUrl);
      const first = await figures.settle(rpcs.regenerate(request));
      const tokenId = first.ok ? first.value.token!.id : "";
      const lock = await lockTokenRow(service.db, tokenId);

      const interrupted = figures.settle(
        rpcs.regenerate(withNewRequestId(request)),
      );
      await waitFor("the call to wait for the row lock", async () => {
        return (await lockWaiters(service.db, database)) > 0;
      });
      const ended = await terminateServiceSessions(service.db, database, true);
      const outcome = await interrupted;
      await lock.release();
      const next = await figures.settle(
        rpcs.regenerate(withNewRequestId(request)),
      );

      const events = await eventsOf(service.db, request.userId);
      figures.print(await countStored(service.db, request.userId));
      expect(ended, "sessions ended").to.equal(1);
      expect(codeOf(outcome)).to.be.oneOf(["UNAVAILABLE", "ABORTED"]);
      expect(next.ok, "next call succeeded").to.equal(true);
      expect(events.map((event) => event.action)).to.deep.equal([
        "create",
        "regenerate",
      ]);
    });
  });

  describe("PostgreSQL stop and start", () => {
    let cluster: PrivatePostgres | undefined;
    let app: App | undefined;

    before(async function () {
      const created = await PrivatePostgres.create();
      if (typeof created === "string") {
        console.log(`    skipped: ${created}`);
        this.skip();
      }
      cluster = created as PrivatePostgres;
    });

    after(async () => {
      await app?.stop(2000);
      await cluster?.remove();
    });

    it("fails fast while down and recovers after", async () => {
      const config = loadConfig({
        ...testEnvironment(cluster!.url()),
        HEALTH_CHECK_INTERVAL_MS: "100",
        DB_CONNECT_TIMEOUT_MS: "1000",
        LOG_LEVEL: "warn",
      });
      app = await startApp(config, createLogger("warn", new LogCapture()));
      const client = new TokenServiceClient(
        `127.0.0.1:${app.port}`,
        credentials.createInsecure(),
      );
      const rpcs = tokenRpcs(client);
      const health = new HealthProbe(app.port);
      const figures = new CaseFigures("PostgreSQL stopped and started");

      // Calls between the start of PostgreSQL and the next health probe
      // belong to no phase whose codes are checked.
      type Phase = "before" | "down" | "restarting" | "after";
      let phase: Phase = "before";
      let running = true;
      const answered: {
        phase: Phase;
        code: string;
        requestId: string;
        provisioned: boolean;
        token?: Token;
        seconds: number;
      }[] = [];

      // Each worker owns one user and calls in sequence, so a worker's
      // calls never contend with each other.
      const worker = async (index: number) => {
        const userId = `user-${randomUUID()}`;
        for (let round = 0; running; round++) {
          const request = ownerRequest(userId);
          const callPhase = phase;
          const startedAt = performance.now();
          const options = { deadline: Date.now() + 15_000 };
          const outcome =
            (round + index) % 2 === 0
              ? await figures.settle(rpcs.regenerate(request, options))
              : await figures.settle(rpcs.getOrProvision(request, options));
          answered.push({
            phase: callPhase,
            code: codeOf(outcome),
            requestId: request.audit.requestId,
            provisioned: outcome.ok && changedToken(outcome.value),
            token: outcome.ok ? outcome.value.token : undefined,
            seconds: (performance.now() - startedAt) / 1000,
          });
          await sleep(outcome.ok ? 10 : 50);
        }
      };
      const workers = Array.from({ length: 4 }, (_, index) => worker(index));

      await sleep(1000);
      await cluster!.stop();
      phase = "down";
      await waitFor("health to report NOT_SERVING", async () => {
        return (await health.check()) === "NOT_SERVING";
      });
      await sleep(1000);

      phase = "restarting";
      await cluster!.start();
      await waitFor("health to report SERVING", async () => {
        return (await health.check()) === "SERVING";
      });
      phase = "after";
      await sleep(1000);
      running = false;
      await Promise.all(workers);

      const db = connect(cluster!.url());
      try {
        const stored = await countStored(db);
        figures.print(stored);
        const down = answered.filter((call) => call.phase === "down");
        const after = answered.filter((call) => call.phase === "after");
        expect(down.length, "calls while down").to.be.greaterThan(0);
        expect(
          down.filter((call) => call.code === "OK"),
          "OK calls while down",
        ).to.deep.equal([]);
        expect(
          down.map((call) => call.code),
          "codes while down",
        ).to.satisfy((codes: string[]) =>
          codes.every((code) => code === "UNAVAILABLE"),
        );
        // Fail fast: bounded by the connect timeout, not by a deadline.
        const slowest = Math.max(...down.map((call) => call.seconds));
        expect(slowest, "slowest call while down, s").to.be.below(10);
        expect(after.length, "calls after the restart").to.be.greaterThan(0);
        expect(
          after.filter((call) => call.code !== "OK"),
          "failed calls after the restart",
        ).to.deep.equal([]);

        for (const call of answered.filter((c) => c.code === "OK")) {
          const [row] = await db("api_tokens").where({ id: call.token!.id });
          expect(row, `token of ${call.requestId}`).to.not.equal(undefined);
          const events = await db("api_token_events").where({
            request_id: call.requestId,
          });
          expect(events, `events of ${call.requestId}`).to.have.length(
            call.provisioned ? 1 : 0,
          );
          if (call.provisioned) {
            expect(events[0].masked).to.equal(call.token!.masked);
          }
        }
      } finally {
        await db.destroy();
        health.close();
        client.close();
      }
    });
  });
});
