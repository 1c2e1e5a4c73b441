import { execFile } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import type { LoadShape } from "./closed-loop";
import { LatencyRecorder, type LoadResult } from "./stats";
import { strideOf, type TableShape } from "./table";

const run = promisify(execFile);

/** Path of pgbench in Debian's PostgreSQL 15 packages. */
const PGBENCH_FALLBACK = "/usr/lib/postgresql/15/bin/pgbench";

/** The hot-path statement, as the service's query builder sends it. */
export interface CapturedQuery {
  /** SQL with $1, $2 ... placeholders. */
  sql: string;
  /** Name the service prepares the statement under, if any. */
  name?: string;
  /**
   * Values of the placeholders. An array value is an SQL array parameter,
   * with one element per lookup of the service's batched reads.
   */
  bindings: unknown[];
  /** The binding, or array element, that contains the user id. */
  userBinding: string;
}

/**
 * Returns the bindings of `query` with the user id, in a binding or an
 * array binding's element, replaced by `userId`.
 */
export function bindUser(query: CapturedQuery, userId: string): unknown[] {
  const substitute = (value: unknown) =>
    value === query.userBinding ? userId : value;
  return query.bindings.map((value) =>
    Array.isArray(value) ? value.map(substitute) : substitute(value),
  );
}

/** A pgbench run of the hot-path statement. */
export interface PgbenchOptions {
  pgbench: string;
  databaseUrl: string;
  query: CapturedQuery;
  /** Whether pgbench prepares the statement, as the service does. */
  prepared: boolean;
  table: TableShape;
  clients: number;
  threads: number;
  shape: LoadShape;
  /** Folder for the script and the per-transaction logs. */
  workDir: string;
}

/** Returns the pgbench command to use: on PATH, or Debian's folder. */
export async function findPgbench(): Promise<string | undefined> {
  for (const candidate of ["pgbench", PGBENCH_FALLBACK]) {
    try {
      await run(candidate, ["--version"]);
      return candidate;
    } catch {
      // Try the next candidate.
    }
  }
  return undefined;
}

/**
 * Writes a pgbench script that sends the captured statement with the same
 * parameters: $n becomes :pn, the user id is drawn like the load worker's
 * sealed users, and the other bindings are passed with --define so that
 * they stay parameters of the prepared statement.
 */
function writeScript(options: PgbenchOptions): {
  file: string;
  defines: string[];
} {
  const { query, table } = options;
  const lines = [
    `\\set k random(0, ${table.benchUsers - 1})`,
    `\\set p_user 1 + :k * ${strideOf(table)}`,
  ];
  const defines: string[] = [];
  const sql = query.sql.replace(/\$(\d+)/g, (_match, digits: string) => {
    const binding = query.bindings[Number(digits) - 1];
    // An array binding of one lookup becomes ARRAY[element]: pgbench
    // variables are scalars.
    const isArray = Array.isArray(binding);
    if (isArray && binding.length !== 1) {
      throw new Error(
        `binding $${digits} is an array of ${binding.length} elements; ` +
          "capture the statement with exactly one lookup",
      );
    }
    const value: unknown = isArray ? binding[0] : binding;
    const wrap = (parameter: string) =>
      isArray ? `ARRAY[${parameter}]` : parameter;

    if (value === query.userBinding) {
      return wrap(":p_user");
    }
    // pgbench rejects an empty --define value, so an empty string goes in
    // as a literal. The planner gets the same value either way.
    if (value === "") {
      return wrap("''");
    }
    defines.push(`--define=p${digits}=${String(value)}`);
    return wrap(`:p${digits}`);
  });
  lines.push(sql.replace(/\s+/g, " ") + ";");

  const file = path.join(options.workDir, "hot-path.sql");
  fs.writeFileSync(file, lines.join("\n") + "\n");
  return { file, defines };
}

/** Reads the latency column (microseconds, third field) of pgbench logs. */
function readLatencies(workDir: string, prefix: string): LatencyRecorder {
  const recorder = new LatencyRecorder();
  for (const name of fs.readdirSync(workDir)) {
    if (!name.startsWith(prefix + ".")) {
      continue;
    }
    const file = path.join(workDir, name);
    for (const line of fs.readFileSync(file, "utf8").split("\n")) {
      const fields = line.split(" ");
      if (fields.length >= 3) {
        recorder.add(Number(fields[2]) / 1000);
      }
    }
    fs.rmSync(file);
  }
  return recorder;
}

/** Reads the transactions a pgbench run reports as processed. */
function processedOf(stdout: string): number {
  const processed = /number of transactions actually processed: (\d+)/.exec(
    stdout,
  );
  if (!processed) {
    throw new Error(`could not read pgbench's output:\n${stdout}`);
  }
  return Number(processed[1]);
}

/**
 * Runs pgbench for the warm-up (unlogged), then for the measured window
 * with per-transaction logging, and returns tps and latency percentiles.
 * Its totalCalls include the warm-up's, as a scenario's do, so that the
 * figures per call divide the work of both by the calls of both.
 */
export async function runPgbench(options: PgbenchOptions): Promise<LoadResult> {
  const { file, defines } = writeScript(options);
  const common = [
    "--no-vacuum",
    // extended sends the same parameters without preparing the statement.
    `--protocol=${options.prepared ? "prepared" : "extended"}`,
    `--client=${options.clients}`,
    `--jobs=${options.threads}`,
    `--file=${file}`,
    ...defines,
  ];

  let warmupCalls = 0;
  if (options.shape.warmupS > 0) {
    const warmup = await run(options.pgbench, [
      ...common,
      `--time=${Math.ceil(options.shape.warmupS)}`,
      options.databaseUrl,
    ]);
    warmupCalls = processedOf(warmup.stdout);
  }

  const prefix = "pgbench-log";
  const { stdout } = await run(options.pgbench, [
    ...common,
    `--time=${Math.ceil(options.shape.durationS)}`,
    "--log",
    `--log-prefix=${path.join(options.workDir, prefix)}`,
    options.databaseUrl,
  ]);

  const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(stdout);
  const failed = /number of failed transactions: (\d+)/.exec(stdout);
  if (!tps) {
    throw new Error(`could not read pgbench's output:\n${stdout}`);
  }

  const calls = processedOf(stdout);
  return {
    calls,
    errors: failed ? Number(failed[1]) : 0,
    totalCalls: warmupCalls + calls,
    durationS: options.shape.durationS,
    callsPerS: Number(tps[1]),
    ...readLatencies(options.workDir, prefix).summarize(),
  };
}
