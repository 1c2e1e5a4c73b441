import { randomUUID } from "node:crypto";
import { credentials } from "@grpc/grpc-js";
import { expect } from "chai";
import type { Knex } from "knex";
import { TokenServiceClient } from "../../src/generated/token/v1/token_service";
import { eventsOf } from "../support/assertions";
import { connect, createDatabase, dropDatabase } from "../support/database";
import { ownerRequest } from "../support/service";
import { countStored, tokenRpcs } from "./support/calls";
import { ChildService } from "./support/child-service";
import { CaseFigures, codeOf } from "./support/figures";
import { HealthProbe } from "./support/health";
import { lockTokenRow, lockWaiters, waitFor } from "./support/waiting";

const SHUTDOWN_TIMEOUT_MS = 10_000;
/** main.ts ends the process this long after the shutdown timeout. */
const FORCED_EXIT_MARGIN_MS = 5000;

describe("shutdown", () => {
  let name: string;
  let url: string;
  let db: Knex;
  let service: ChildService | undefined;
  let client: TokenServiceClient | undefined;
  let health: HealthProbe | undefined;

  beforeEach(async () => {
    name = `token_service_faults_${process.pid}_${randomUUID().slice(0, 8)}`;
    url = await createDatabase(name);
    db = connect(url);
  });

  afterEach(async () => {
    client?.close();
    health?.close();
    service?.kill();
    await db.destroy();
    await dropDatabase(name);
  });

  async function startChild(env: Record<string, string> = {}) {
    service = await ChildService.start(url, {
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
      LOCK_TIMEOUT_MS: "30000",
      STATEMENT_TIMEOUT_MS: "30000",
      ...env,
    });
    client = new TokenServiceClient(
      `127.0.0.1:${service.port()}`,
      credentials.createInsecure(),
    );
    health = new HealthProbe(service.port()!);
    return { service, rpcs: tokenRpcs(client), health };
  }

  /**
   * Creates the user's token, locks its row from the test's connection and
   * starts a Regenerate that waits behind that lock.
   */
  async function holdRegenerate(
    rpcs: ReturnType<typeof tokenRpcs>,
    figures: CaseFigures,
    request: ReturnType<typeof ownerRequest>,
  ) {
    const first = await figures.settle(rpcs.getOrProvision(request));
    const tokenId = first.ok ? first.value.token!.id : "";
    const lock = await lockTokenRow(db, tokenId);

    const heldCall = figures.settle(rpcs.regenerate(request));
    await waitFor("the call to wait for the row lock", async () => {
      return (await lockWaiters(db, name)) > 0;
    });
    return { lock, heldCall };
  }

  it("drains a call held for 2 s on SIGTERM", async () => {
    const { service, rpcs, health } = await startChild();
    const figures = new CaseFigures("SIGTERM with a call held 2 s");
    const request = ownerRequest();
    const statuses: string[] = [];
    const watch = health.watch((status) => statuses.push(status));
    await waitFor("the health watch", () => statuses.includes("SERVING"));

    const { lock, heldCall } = await holdRegenerate(rpcs, figures, request);
    const signalledAt = Date.now();
    service.signal("SIGTERM");
    await waitFor("health to report NOT_SERVING", () =>
      statuses.includes("NOT_SERVING"),
    );
    const newCall = await figures.settle(
      rpcs.getOrProvision(ownerRequest(), { deadline: Date.now() + 5000 }),
    );
    setTimeout(() => void lock.release(), 2000);

    const outcome = await heldCall;
    const exitCode = await service.exited(
      SHUTDOWN_TIMEOUT_MS + FORCED_EXIT_MARGIN_MS + 10_000,
    );
    watch.cancel();

    const stored = await countStored(db, request.userId);
    figures.print(stored);
    expect(outcome.ok, "held call succeeded").to.equal(true);
    expect(codeOf(newCall), "new call").to.equal("UNAVAILABLE");
    expect(exitCode, "exit code").to.equal(0);
    expect(service.exitedAt! - signalledAt, "ms to exit").to.be.below(
      SHUTDOWN_TIMEOUT_MS,
    );
    const notServing = service.indexOf("health status changed", {
      status: "NOT_SERVING",
    });
    const stopped = service.indexOf("server stopped");
    expect(notServing, "NOT_SERVING logged").to.be.greaterThan(-1);
    expect(stopped, "stop logged after NOT_SERVING").to.be.greaterThan(
      notServing,
    );
    expect(service.logs[stopped].drained, "drained").to.equal(true);
    expect(service.otherOutput, "output that is not JSON").to.deep.equal([]);
    const events = await eventsOf(db, request.userId);
    expect(events.map((event) => event.action)).to.deep.equal([
      "create",
      "regenerate",
    ]);
    expect(await lockWaiters(db, name), "sessions left").to.equal(0);
  });

  it("exits at the bound when a call never ends", async () => {
    const { service, rpcs } = await startChild({ SHUTDOWN_TIMEOUT_MS: "1000" });
    const figures = new CaseFigures("SIGTERM with a call held past the bound");
    const request = ownerRequest();
    const { lock, heldCall } = await holdRegenerate(rpcs, figures, request);
    const signalledAt = Date.now();
    service.signal("SIGTERM");
    const outcome = await heldCall;
    const exitCode = await service.exited(
      1000 + FORCED_EXIT_MARGIN_MS + 10_000,
    );
    await lock.release();

    const stored = await countStored(db, request.userId);
    figures.print(stored);
    expect(outcome.ok, "held call succeeded").to.equal(false);
    expect(service.exitedAt! - signalledAt, "ms to exit").to.be.below(
      1000 + FORCED_EXIT_MARGIN_MS,
    );
    // The forced shutdown cancels the held statement, so the pool closes
    // and main.ts exits normally, before its own exit timer.
    expect(exitCode, "exit code").to.equal(0);
    expect(service.indexOf("server stopped"), "stop logged").to.be.above(-1);
    const events = await eventsOf(db, request.userId);
    expect(events.map((event) => event.action)).to.deep.equal(["create"]);
  });
});
