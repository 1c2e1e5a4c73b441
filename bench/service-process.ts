import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { BenchKeys } from "./seed";

/** Compiled entry point of the service, as `npm start` runs it. */
const SERVICE_MAIN = path.resolve(__dirname, "..", "dist", "main.js");

/** Maximum wait for the service's "server started" log line. */
const START_TIMEOUT_MS = 30_000;

/** The service under test, running as a child process. */
export interface ServiceProcess {
  address: string;
  pid: number;
  /** File that receives the service's standard output and error. */
  logFile: string;
  /** Peak resident set size so far (VmHWM), in kibibytes. */
  peakRssKib(): number;
  /** Sends SIGTERM and waits for the process to exit. */
  stop(): Promise<void>;
}

/** Reads one "Name:   123 kB" field of /proc/PID/status, in kibibytes. */
export function readProcStatusKib(pid: number, field: string): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status);
  if (!match) {
    throw new Error(`/proc/${pid}/status has no ${field} line`);
  }
  return Number(match[1]);
}

/**
 * Returns the Node.js flags that `npm start` passes before dist/main.js, so
 * that the bench runs the service as it is deployed.
 */
export function readStartFlags(): string[] {
  const packageFile = path.resolve(__dirname, "..", "package.json");
  const start: string =
    JSON.parse(fs.readFileSync(packageFile, "utf8")).scripts?.start ?? "";
  // The script may `exec` node so that signals reach it directly.
  const command = start
    .split("&&")
    .pop()!
    .trim()
    .replace(/^exec\s+/, "")
    .split(/\s+/);
  if (command[0] !== "node" || command.at(-1) !== "dist/main.js") {
    throw new Error(
      `cannot read the Node.js flags from the start script ` +
        `${JSON.stringify(start)}: expected "[exec] node [flags] ` +
        `dist/main.js" last`,
    );
  }
  return command.slice(1, -1);
}

/** Clock ticks per second of /proc/PID/stat; USER_HZ is 100 on Linux. */
const CLOCK_TICKS_PER_S = 100;

/**
 * Reads the user plus system CPU time a process has used, in milliseconds,
 * with a resolution of one clock tick (10 ms).
 */
export function readCpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which may hold spaces, start at "state";
  // utime and stime are fields 14 and 15 of the whole line.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / CLOCK_TICKS_PER_S;
}

/**
 * Returns the CPU time, in milliseconds, of every PostgreSQL process on
 * this machine, backends that have exited included. The server process
 * adds an exited backend's time to its children's (cutime and cstime)
 * when it reaps it. Other clients of the same server count too.
 */
export function readDatabaseCpuMs(): number {
  let ticks = 0;
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) {
      continue;
    }
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, "utf8");
    } catch {
      continue; // The process ended while the folder was read.
    }
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    if (!name.startsWith("postgres")) {
      continue;
    }
    // utime, stime, cutime and cstime are fields 14 to 17 of the line.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    ticks += fields.slice(11, 15).reduce((sum, f) => sum + Number(f), 0);
  }
  return (ticks * 1000) / CLOCK_TICKS_PER_S;
}

async function waitForPort(
  child: ChildProcess,
  logFile: string,
): Promise<number> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) {
      break;
    }
    for (const line of fs.readFileSync(logFile, "utf8").split("\n")) {
      if (line.includes('"server started"')) {
        return (JSON.parse(line) as { port: number }).port;
      }
    }
    await sleep(100);
  }
  const outcome =
    child.exitCode === null
      ? `within ${START_TIMEOUT_MS} ms`
      : `before it exited with code ${child.exitCode}`;
  throw new Error(
    `the service did not log "server started" ${outcome}; see ${logFile}`,
  );
}

/**
 * Cache lifetime of ValidateToken results in the bench's services. The
 * cache-miss run walks a 10k table in about 3 s at the rates seen here, so
 * under the default 5 s a second pass would hit entries of the first.
 */
export const BENCH_CACHE_TTL_MS = 2000;

/** Builds the environment of a bench service on one seeded database. */
export function benchServiceEnv(
  databaseUrl: string,
  keys: BenchKeys,
  poolMax: number,
): Record<string, string> {
  return {
    DATABASE_URL: databaseUrl,
    DB_POOL_MAX: String(poolMax),
    TOKEN_ENCRYPTION_KEY: keys.encryptionKey.key.toString("base64"),
    TOKEN_ENCRYPTION_KEY_ID: keys.encryptionKey.id,
    TOKEN_SIGNING_SECRET: keys.signingSecret.toString("utf8"),
    VALIDATION_CACHE_TTL_MS: String(BENCH_CACHE_TTL_MS),
    LOG_LEVEL: "info",
  };
}

/**
 * Starts dist/main.js with the flags of `npm start` and `env` added to this
 * process's environment, its log lines written to `logFile`, as a
 * deployment would write them to a file or a collector. `nodeOptions` go
 * after the start flags, for example --cpu-prof. `main` is the entry point
 * of another build, such as one in a second checkout.
 */
export async function startServiceProcess(
  env: Record<string, string>,
  logFile: string,
  nodeOptions: string[] = [],
  main = SERVICE_MAIN,
): Promise<ServiceProcess> {
  if (!fs.existsSync(main)) {
    throw new Error(`${main} is missing: run npm run build first`);
  }

  const log = fs.openSync(logFile, "w");
  const flags = [...readStartFlags(), ...nodeOptions];
  const child = spawn(process.execPath, [...flags, main], {
    env: { ...process.env, ...env, GRPC_ADDRESS: "127.0.0.1:0" },
    stdio: ["ignore", log, log],
  });
  fs.closeSync(log);

  let port: number;
  try {
    port = await waitForPort(child, logFile);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }

  const pid = child.pid!;
  return {
    address: `127.0.0.1:${port}`,
    pid,
    logFile,
    peakRssKib: () => readProcStatusKib(pid, "VmHWM"),
    stop: async () => {
      if (child.exitCode === null) {
        const exited = once(child, "exit");
        child.kill("SIGTERM");
        await exited;
      }
    },
  };
}
