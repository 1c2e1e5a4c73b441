/** The child processes a bench run starts besides the service. */
import { type ChildProcess, fork } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import type { LoadJob, LoadReply } from "./load-worker";
import type { LoadResult } from "./stats";

const LOAD_WORKER = path.join(__dirname, "load-worker.ts");
const EMPTY_SERVER = path.join(__dirname, "empty-server.ts");
const BARE_SERVER = path.join(__dirname, "bare-server.ts");
const TS_EXEC_ARGV = ["--require", "tsx/cjs"];

/** Starts the load generator, which runs one job at a time. */
export function startLoadWorker(): ChildProcess {
  return fork(LOAD_WORKER, [], { execArgv: TS_EXEC_ARGV });
}

/** Sends one job to the load worker and awaits its result. */
export async function runJob(
  worker: ChildProcess,
  job: LoadJob,
): Promise<LoadResult> {
  worker.send(job);
  const [reply] = (await once(worker, "message")) as [LoadReply];
  if ("error" in reply) {
    throw new Error(`load worker failed: ${reply.error}`);
  }
  return reply.result;
}

/** Starts a server script that sends its bound port over IPC. */
async function startChildServer(
  file: string,
): Promise<{ child: ChildProcess; address: string }> {
  const child = fork(file, [], { execArgv: TS_EXEC_ARGV });
  const [message] = (await once(child, "message")) as [{ port: number }];
  return { child, address: `127.0.0.1:${message.port}` };
}

/** Starts the trivial server whose empty unary call is the floor. */
export function startEmptyServer() {
  return startChildServer(EMPTY_SERVER);
}

/** Starts the bare ValidateToken server of bench/bare-server.ts. */
export function startBareServer() {
  return startChildServer(BARE_SERVER);
}

/** Writes a progress line to standard error, with the time of day. */
export function logProgress(message: string): void {
  process.stderr.write(
    `[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`,
  );
}

/**
 * Runs `work`, then `cleanUp`. If SIGINT or SIGTERM interrupts the work,
 * `cleanUp` runs too and the bench exits with code 130, so Ctrl-C leaves
 * no bench database or service process behind.
 */
export async function withCleanUp<T>(
  work: () => Promise<T>,
  cleanUp: () => Promise<void>,
): Promise<T> {
  let cleaning: Promise<void> | undefined;
  const cleanUpOnce = () => {
    cleaning ??= cleanUp();
    return cleaning;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    logProgress(`${signal}: stopping the services and dropping the databases`);
    cleanUpOnce().then(
      () => process.exit(130),
      (err: unknown) => {
        logProgress(`clean-up failed: ${String(err)}`);
        process.exit(130);
      },
    );
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    return await work();
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await cleanUpOnce();
  }
}
