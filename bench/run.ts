/**
 * `npm run bench`: measures GetOrProvision, and ValidateToken where the
 * generated client has it, in one run and on one PostgreSQL server. The
 * limits beside them are an empty grpc-js unary call, the same SQL through
 * a raw pg pool and the same SQL through pgbench. Prints Markdown for
 * docs/benchmarks.md.
 */
import { type ChildProcess, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import knex from "knex";
import { findDefaultTokensForLogin } from "../src/tokens/repository";
import type { LoadShape } from "./closed-loop";
import {
  logProgress as log,
  runJob,
  withCleanUp,
  startEmptyServer,
  startLoadWorker,
} from "./children";
import { type CapturedQuery, findPgbench, runPgbench } from "./pgbench";
import { summarizeProfile } from "./profile-summary";
import {
  formatTable,
  formatTargets,
  type Measurement,
  summarizeRow,
  type TargetCheck,
  type WorkloadRow,
} from "./report";
import { findMethod, SCENARIOS } from "./scenarios";
import { createBenchKeys, dropBenchDatabase, seedBenchDatabase } from "./seed";
import {
  BENCH_CACHE_TTL_MS,
  benchServiceEnv,
  readCpuMs,
  readDatabaseCpuMs,
  readStartFlags,
  type ServiceProcess,
  startServiceProcess,
} from "./service-process";
import { loadBenchSettings, type BenchSettings } from "./settings";
import type { LoadResult } from "./stats";
import { BENCH_ORG_ID, formatRows, type TableShape } from "./table";

const EMPTY_RPC = "empty unary RPC (floor)";
const RAW_PG = "raw pg, same SQL";
const PGBENCH = "pgbench, same SQL";
const PGBENCH_UNPREPARED = "pgbench, same SQL, unprepared";

/** Connections left free for the engineers sharing the server. */
const CONNECTION_MARGIN = 10;

/** Wait for backends to flush their pg_stat_database counters. */
const STATS_FLUSH_MS = 2500;

/** A user id no row has, to capture the hot-path SQL with. */
const CAPTURE_USER_ID = "bench-capture-user";

/** One seeded database with the service running on it. */
interface Target {
  name: string;
  table: TableShape;
  databaseUrl: string;
  service?: ServiceProcess;
  /** Calls sent to the service, warm-up included, to check its log. */
  serviceCalls: number;
}

function formatLoad(loads: number[]): string {
  return loads.map((load) => load.toFixed(2)).join(", ");
}

/** Describes the machine; `startLoad` is the load average at the start. */
function describeMachine(startLoad: number[]): string {
  const cpus = os.cpus();
  const pgVersion = execFileSync("psql", ["--version"], { encoding: "utf8" });
  return [
    `- CPU: ${cpus.length} x ${cpus[0]?.model ?? "unknown"}`,
    `- memory: ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    `- load average at start: ${formatLoad(startLoad)}; at the end, ` +
      `the bench's own load included: ${formatLoad(os.loadavg())}`,
    `- Node.js ${process.version}, ${pgVersion.trim()} (client)`,
  ].join("\n");
}

/** Reads committed plus rolled-back transactions of a database. */
async function countTransactions(databaseUrl: string): Promise<number> {
  const db = knex({
    client: "pg",
    connection: databaseUrl,
    pool: { min: 0, max: 1 },
  });
  try {
    const row = await db("pg_stat_database")
      .select(db.raw("xact_commit + xact_rollback as count"))
      .where("datname", db.raw("current_database()"))
      .first();
    return Number(row.count);
  } finally {
    await db.destroy();
  }
}

/**
 * Runs a job and counts the database's transactions during it. The count
 * includes the reading connection's own few and the service's health
 * probe, so it is an upper bound.
 */
async function measure(
  databaseUrl: string | undefined,
  pids: { server?: number; client?: number },
  work: () => Promise<LoadResult>,
): Promise<Omit<Measurement, "round" | "floorCallsPerS">> {
  const transactionsBefore = databaseUrl
    ? await countTransactions(databaseUrl)
    : 0;
  const serverCpuBefore = pids.server ? readCpuMs(pids.server) : 0;
  const clientCpuBefore = pids.client ? readCpuMs(pids.client) : 0;
  const databaseCpuBefore = readDatabaseCpuMs();
  const result = await work();

  const usPerCall = (pid: number | undefined, before: number) =>
    pid ? ((readCpuMs(pid) - before) * 1000) / result.totalCalls : undefined;
  const cpu = {
    serverCpuUsPerCall: usPerCall(pids.server, serverCpuBefore),
    clientCpuUsPerCall: usPerCall(pids.client, clientCpuBefore),
  };
  if (!databaseUrl) {
    return { result, ...cpu };
  }

  // Read before the statistics query below, which costs the database CPU.
  const databaseCpuUsPerCall =
    ((readDatabaseCpuMs() - databaseCpuBefore) * 1000) / result.totalCalls;
  await sleep(STATS_FLUSH_MS);
  const transactions =
    (await countTransactions(databaseUrl)) - transactionsBefore;
  return {
    result,
    ...cpu,
    databaseCpuUsPerCall,
    transactionsPerCall: transactions / result.totalCalls,
  };
}

/**
 * Captures the SQL of GetOrProvision's read of an existing token, with its
 * bindings, for one lookup: the baselines run one login a statement, where
 * the service gathers concurrent logins into one. Every bench call carries
 * an audit.request_id, so the lookup also reads the idempotency key, here
 * of a request id no row has, as for every bench call.
 */
async function captureHotPathQuery(
  databaseUrl: string,
): Promise<CapturedQuery> {
  const db = knex({
    client: "pg",
    connection: databaseUrl,
    pool: { min: 0, max: 1 },
  });
  let captured: CapturedQuery | undefined;
  db.on(
    "query",
    (query: {
      sql: string;
      bindings?: unknown[];
      options?: { name?: string };
    }) => {
      captured ??= {
        sql: query.sql,
        name: query.options?.name,
        bindings: query.bindings ?? [],
        userBinding: CAPTURE_USER_ID,
      };
    },
  );
  try {
    await findDefaultTokensForLogin(db, [
      {
        owner: { userId: CAPTURE_USER_ID, orgId: BENCH_ORG_ID },
        keyId: {
          clientService: "token-service-bench",
          rpc: "GetOrProvision",
          requestId: "bench-capture",
        },
      },
    ]);
  } finally {
    await db.destroy();
  }
  if (!captured) {
    throw new Error("findDefaultTokensForLogin sent no query through knex");
  }
  return captured;
}

/** Returns how many pgbench clients the shared server has room for. */
async function pgbenchClients(settings: BenchSettings): Promise<number> {
  const db = knex({
    client: "pg",
    connection: settings.adminUrl,
    pool: { min: 0, max: 1 },
  });
  try {
    const result = await db.raw(`
      select current_setting('max_connections')::int
        - current_setting('superuser_reserved_connections')::int
        - (select count(*) from pg_stat_activity)::int as free`);
    const free = Number(result.rows[0].free) - CONNECTION_MARGIN;
    return Math.max(1, Math.min(settings.concurrency, free));
  } finally {
    await db.destroy();
  }
}

function formatResult(result: LoadResult): string {
  const errors =
    result.errors > 0 ? `, ${result.errors} errors (${result.firstError})` : "";
  return (
    `${result.callsPerS.toFixed(0)} calls/s, p50 ${result.p50Ms.toFixed(2)} ms, ` +
    `p99 ${result.p99Ms.toFixed(2)} ms${errors}`
  );
}

/** Collects measurements by workload and table size, in first-seen order. */
class Results {
  readonly rows: WorkloadRow[] = [];

  add(workload: string, rows: number | undefined, measurement: Measurement) {
    let row = this.rows.find((r) => r.workload === workload && r.rows === rows);
    if (!row) {
      row = { workload, rows, measurements: [] };
      this.rows.push(row);
    }
    row.measurements.push(measurement);
  }

  find(workload: string, rows?: number): WorkloadRow | undefined {
    return this.rows.find((r) => r.workload === workload && r.rows === rows);
  }
}

function checkTargets(
  results: Results,
  settings: BenchSettings,
  peakRssMib: number,
): TargetCheck[] {
  const checks: TargetCheck[] = [];
  const goals: Record<string, number> = {
    "GetOrProvision, existing token": 0.5,
    "ValidateToken, cache hit": 0.8,
    "ValidateToken, cache miss": 0.5,
  };
  const smallest = Math.min(...settings.tableSizes);
  const largest = Math.max(...settings.tableSizes);

  for (const [workload, goal] of Object.entries(goals)) {
    for (const rows of settings.tableSizes) {
      const row = results.find(workload, rows);
      if (!row) {
        continue;
      }
      const s = summarizeRow(row);
      const where = `${workload}, ${formatRows(rows)}`;
      checks.push({
        target: `${where}: >= ${goal}x floor`,
        measured: `${s.floorRatio.toFixed(2)}x`,
        met: s.floorRatio >= goal,
      });
      checks.push({
        target: `${where}: p99 <= 5x p50`,
        measured: `${(s.p99Ms / s.p50Ms).toFixed(1)}x`,
        met: s.p99Ms <= 5 * s.p50Ms,
      });
      const rawPg = results.find(RAW_PG, rows);
      if (workload.startsWith("GetOrProvision") && rawPg) {
        const own = s.transactionsPerCall ?? Number.NaN;
        const baseline = summarizeRow(rawPg).transactionsPerCall ?? Number.NaN;
        checks.push({
          target: `${where}: transactions per call <= raw pg's`,
          measured: `${own.toFixed(2)} vs ${baseline.toFixed(2)}`,
          met: own <= baseline + 0.05,
        });
      }
    }

    const small = results.find(workload, smallest);
    const large = results.find(workload, largest);
    if (small && large && smallest !== largest) {
      const a = summarizeRow(small);
      const b = summarizeRow(large);
      const rateChange = Math.abs(b.callsPerS / a.callsPerS - 1);
      const p50Change = Math.abs(b.p50Ms / a.p50Ms - 1);
      checks.push({
        target: `${workload}: calls/s and p50 within 15% from ${formatRows(smallest)} to ${formatRows(largest)}`,
        measured: `calls/s ${(rateChange * 100).toFixed(0)}%, p50 ${(p50Change * 100).toFixed(0)}%`,
        met: rateChange <= 0.15 && p50Change <= 0.15,
      });
    }
  }

  checks.push({
    target: "service peak RSS (VmHWM) < 150 MB",
    measured: `${peakRssMib.toFixed(0)} MiB = ${(peakRssMib * 1.048576).toFixed(0)} MB`,
    met: peakRssMib * 1.048576 < 150,
  });
  return checks;
}

async function runRound(
  round: number,
  settings: BenchSettings,
  worker: ChildProcess,
  emptyServer: { address: string; pid: number },
  targets: Target[],
  query: CapturedQuery,
  pgbench: { command?: string; clients: number; workDir: string },
  results: Results,
): Promise<void> {
  const shape: LoadShape = {
    concurrency: settings.concurrency,
    warmupS: settings.warmupS,
    durationS: settings.durationS,
  };

  let floorCallsPerS = Number.NaN;
  const measureFloor = async () => {
    const measuredFloor = await measure(
      undefined,
      { server: emptyServer.pid, client: worker.pid },
      () =>
        runJob(worker, { kind: "empty", address: emptyServer.address, shape }),
    );
    log(`round ${round}: ${EMPTY_RPC}: ${formatResult(measuredFloor.result)}`);
    floorCallsPerS = measuredFloor.result.callsPerS;
    results.add(EMPTY_RPC, undefined, {
      round,
      floorCallsPerS,
      ...measuredFloor,
    });
  };
  const record = (
    workload: string,
    target: Target,
    measured: Omit<Measurement, "round" | "floorCallsPerS">,
  ) => {
    log(
      `round ${round}: ${workload}, ${formatRows(target.table.rows)}: ${formatResult(measured.result)}`,
    );
    results.add(workload, target.table.rows, {
      round,
      floorCallsPerS,
      ...measured,
    });
  };

  // The machine's load drifts over minutes. Each workload therefore runs
  // on every table back to back, right after a floor of its own, so that
  // the tables' figures and their floor see nearly the same load.
  for (const scenario of SCENARIOS) {
    if (!findMethod(scenario.method) || !selected(settings, scenario.name)) {
      continue;
    }
    await measureFloor();
    for (const target of targets) {
      const measured = await measure(
        target.databaseUrl,
        { server: target.service!.pid, client: worker.pid },
        () =>
          runJob(worker, {
            kind: "scenario",
            address: target.service!.address,
            scenario: scenario.name,
            table: target.table,
            shape,
          }),
      );
      target.serviceCalls += measured.result.totalCalls;
      const repeatsAfter = scenario.repeatsAfter?.(target.table);
      const callsPerTtl =
        (measured.result.totalCalls / (shape.warmupS + shape.durationS)) *
        (BENCH_CACHE_TTL_MS / 1000);
      if (repeatsAfter !== undefined && callsPerTtl > repeatsAfter) {
        log(
          `NOTE: ${scenario.name} made about ${callsPerTtl.toFixed(0)} calls ` +
            `in the cache's ${BENCH_CACHE_TTL_MS} ms lifetime on ` +
            `${repeatsAfter} rows, so some calls were cache hits`,
        );
      }
      record(scenario.name, target, measured);
    }
  }

  const rawPg = selected(settings, RAW_PG);
  // The unprepared run shows what preparing the statement saves the
  // database. BENCH_ONLY=pgbench selects both runs.
  const pgbenchRuns = (
    [
      [PGBENCH, true],
      [PGBENCH_UNPREPARED, false],
    ] as const
  ).filter(
    ([workload]) =>
      pgbench.command !== undefined && selected(settings, workload),
  );
  if (!rawPg && pgbenchRuns.length === 0) {
    return;
  }
  await measureFloor();
  for (const target of targets) {
    if (rawPg) {
      record(
        RAW_PG,
        target,
        await measure(target.databaseUrl, { client: worker.pid }, () =>
          runJob(worker, {
            kind: "pg",
            databaseUrl: target.databaseUrl,
            poolMax: settings.poolMax,
            ...query,
            table: target.table,
            shape,
          }),
        ),
      );
    }
    for (const [workload, prepared] of pgbenchRuns) {
      record(
        workload,
        target,
        await measure(target.databaseUrl, {}, () =>
          runPgbench({
            pgbench: pgbench.command!,
            databaseUrl: target.databaseUrl,
            query,
            prepared,
            table: target.table,
            clients: pgbench.clients,
            threads: Math.min(pgbench.clients, os.cpus().length),
            shape,
            workDir: pgbench.workDir,
          }),
        ),
      );
    }
  }
}

/** Checks whether BENCH_ONLY selects a workload. */
function selected(settings: BenchSettings, workload: string): boolean {
  const name = workload.toLowerCase();
  return (
    settings.only.length === 0 ||
    settings.only.some((entry) => name.includes(entry))
  );
}

/** Counts the "call finished" lines a service wrote. */
function countCallLogLines(logFile: string): number {
  let count = 0;
  const text = fs.readFileSync(logFile, "utf8");
  for (
    let at = text.indexOf('"call finished"');
    at !== -1;
    at = text.indexOf('"call finished"', at + 1)
  ) {
    count++;
  }
  return count;
}

async function main(): Promise<void> {
  const settings = loadBenchSettings();
  const startedAt = Date.now();
  const startLoad = os.loadavg();
  const workDir = fs.mkdtempSync(
    path.join(os.tmpdir(), "token-service-bench-"),
  );
  const keys = createBenchKeys();
  const targets: Target[] = settings.tableSizes.map((rows) => ({
    name: `token_service_bench_${process.pid}_${formatRows(rows).toLowerCase()}`,
    table: { rows, benchUsers: Math.min(settings.benchUsers, rows) },
    databaseUrl: "",
    serviceCalls: 0,
  }));
  const results = new Results();
  const children: ChildProcess[] = [];

  log(`settings: ${JSON.stringify({ ...settings, adminUrl: undefined })}`);
  await withCleanUp(
    async () => {
      for (const target of targets) {
        const seedStart = Date.now();
        target.databaseUrl = await seedBenchDatabase(
          settings.adminUrl,
          target.name,
          target.table,
          keys,
        );
        log(
          `seeded ${formatRows(target.table.rows)} tokens in ${((Date.now() - seedStart) / 1000).toFixed(1)} s`,
        );
      }

      for (const target of targets) {
        target.service = await startServiceProcess(
          benchServiceEnv(target.databaseUrl, keys, settings.poolMax),
          path.join(workDir, `${target.name}.log`),
          [
            ...settings.serviceNodeOptions,
            ...(settings.profile
              ? ["--cpu-prof", `--cpu-prof-dir=${workDir}`]
              : []),
          ],
        );
      }

      const worker = startLoadWorker();
      children.push(worker);
      const empty = await startEmptyServer();
      children.push(empty.child);

      const query = await captureHotPathQuery(targets[0].databaseUrl);
      log(`hot-path SQL: ${query.sql}`);
      const pgbenchCommand = await findPgbench();
      const clients = await pgbenchClients(settings);
      if (!pgbenchCommand) {
        log("NOTE: pgbench is not installed; its baseline is skipped");
      } else if (clients < settings.concurrency) {
        log(
          `NOTE: the shared server has room for ${clients} more connections, so pgbench runs ${clients} clients, not ${settings.concurrency}`,
        );
      }

      for (const scenario of SCENARIOS) {
        if (!findMethod(scenario.method)) {
          log(
            `skipped "${scenario.name}": the generated TokenService client has no ` +
              `${scenario.method} RPC; add it to the proto and run npm run generate`,
          );
        }
      }

      for (let round = 1; round <= settings.rounds; round++) {
        await runRound(
          round,
          settings,
          worker,
          { address: empty.address, pid: empty.child.pid! },
          targets,
          query,
          { command: pgbenchCommand, clients, workDir },
          results,
        );
      }

      let peakRssMib = 0;
      for (const target of targets) {
        const service = target.service!;
        const rssMib = service.peakRssKib() / 1024;
        peakRssMib = Math.max(peakRssMib, rssMib);
        log(
          `service on ${formatRows(target.table.rows)}: peak RSS ${rssMib.toFixed(0)} MiB`,
        );
      }
      for (const target of targets) {
        await target.service!.stop();
        const lines = countCallLogLines(target.service!.logFile);
        log(
          `service on ${formatRows(target.table.rows)}: ${lines} "call finished" log lines for ${target.serviceCalls} calls`,
        );
      }

      const minutes = ((Date.now() - startedAt) / 60_000).toFixed(1);
      const benchEnv = Object.entries(process.env)
        .filter(([name]) => name.startsWith("BENCH_") || name === "DB_POOL_MAX")
        .map(([name, value]) => `${name}=${value} `)
        .join("");
      const serviceFlags = [
        ...readStartFlags(),
        ...settings.serviceNodeOptions,
      ];
      const report = [
        `## Run of ${new Date().toISOString().slice(0, 16)}Z (${minutes} min)`,
        "",
        `- command: \`${benchEnv}npm run bench\``,
        `- service: \`node ${serviceFlags.join(" ")} dist/main.js\``,
        describeMachine(startLoad),
        `- settings: ${settings.concurrency} callers, ${settings.warmupS} s warm-up, ` +
          `${settings.durationS} s window, ${settings.rounds} rounds, pool ${settings.poolMax}, ` +
          `${settings.benchUsers} sealed users, pgbench ${clients} clients`,
        "",
        formatTable(results.rows),
        "",
        formatTargets(checkTargets(results, settings, peakRssMib)),
        "",
      ].join("\n");
      process.stdout.write(report);

      if (settings.profile) {
        for (const name of fs
          .readdirSync(workDir)
          .filter((n) => n.endsWith(".cpuprofile"))) {
          const file = path.join(workDir, name);
          process.stdout.write(
            `\nCPU profile ${file}:\n${summarizeProfile(file, 25)}\n`,
          );
        }
      }
    },
    async () => {
      for (const target of targets) {
        await target.service?.stop();
      }
      for (const child of children) {
        if (child.connected) {
          child.disconnect();
        }
      }
      for (const target of targets) {
        await dropBenchDatabase(settings.adminUrl, target.name);
      }
      if (!settings.profile) {
        fs.rmSync(workDir, { recursive: true, force: true });
      }
    },
  );
}

main().catch((err: unknown) => {
  process.stderr.write(
    `bench failed: ${err instanceof Error ? err.stack : String(err)}\n`,
  );
  process.exitCode = 1;
});
