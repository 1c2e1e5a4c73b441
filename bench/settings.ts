/** Settings of one bench run, read once from the environment. */
export interface BenchSettings {
  quick: boolean;
  /** Concurrent callers of every load, pgbench clients included. */
  concurrency: number;
  warmupS: number;
  durationS: number;
  /** Times every measurement is repeated; the report gives the median. */
  rounds: number;
  /** Stored tokens of each bench database. */
  tableSizes: number[];
  /** Users with sealed secrets, whom GetOrProvision is called for. */
  benchUsers: number;
  /** Pool size of the service and of the raw pg baseline. */
  poolMax: number;
  /** Server on which the bench creates and drops its databases. */
  adminUrl: string;
  /** Whether the service runs under `node --cpu-prof`. */
  profile: boolean;
  /** Extra Node.js flags for the service, such as --max-semi-space-size=4. */
  serviceNodeOptions: string[];
  /**
   * Workloads to run, matched as case-insensitive substrings of their
   * names; empty runs all. The empty-RPC floor always runs.
   */
  only: string[];
  /** bench:compare only: cycles of one slice per build and the floor. */
  slices: number;
  /** bench:compare only: seconds of each slice. */
  sliceS: number;
}

/** A bench setting that is malformed; the message names the variable. */
export class BenchSettingError extends Error {
  override name = "BenchSettingError";
}

type Env = Record<string, string | undefined>;

function readNumber(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") {
    return fallback;
  }

  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    throw new BenchSettingError(
      `${name}=${JSON.stringify(raw)} is invalid: set a positive number, ` +
        `or unset it for the default ${fallback}`,
    );
  }
  return value;
}

function readSizes(env: Env, fallback: number[]): number[] {
  const raw = env.BENCH_SIZES;
  if (raw === undefined || raw === "") {
    return fallback;
  }

  const sizes = raw.split(",").map((entry) => Number(entry.trim()));
  if (sizes.some((size) => !Number.isInteger(size) || size <= 0)) {
    throw new BenchSettingError(
      `BENCH_SIZES=${JSON.stringify(raw)} is invalid: set comma-separated ` +
        `row counts such as 10000,1000000`,
    );
  }
  return sizes;
}

/**
 * Reads the bench settings. BENCH_QUICK=1 selects one round and a 100k
 * table in place of 1M, for iterating on a change.
 */
export function loadBenchSettings(env: Env = process.env): BenchSettings {
  const quick = env.BENCH_QUICK === "1";

  return {
    quick,
    concurrency: Math.floor(readNumber(env, "BENCH_CONCURRENCY", 64)),
    warmupS: readNumber(env, "BENCH_WARMUP_S", 1),
    // Many short rounds rather than a few long ones: the medians then
    // resist the shared machine's load, which drifts over seconds.
    durationS: readNumber(env, "BENCH_DURATION_S", 3),
    rounds: Math.floor(readNumber(env, "BENCH_ROUNDS", quick ? 1 : 8)),
    tableSizes: readSizes(env, quick ? [10_000, 100_000] : [10_000, 1_000_000]),
    benchUsers: Math.floor(readNumber(env, "BENCH_USERS", 2000)),
    poolMax: Math.floor(readNumber(env, "DB_POOL_MAX", 10)),
    adminUrl:
      env.BENCH_DATABASE_URL ||
      env.TEST_DATABASE_URL ||
      "postgres://postgres@127.0.0.1:5432/postgres",
    profile: env.BENCH_PROFILE === "1",
    serviceNodeOptions: (env.BENCH_SERVICE_NODE_OPTIONS ?? "")
      .split(/\s+/)
      .filter((flag) => flag !== ""),
    only: (env.BENCH_ONLY ?? "")
      .split(",")
      .map((entry) => entry.trim().toLowerCase())
      .filter((entry) => entry !== ""),
    slices: Math.floor(readNumber(env, "BENCH_SLICES", 20)),
    sliceS: readNumber(env, "BENCH_SLICE_S", 1),
  };
}
