import { type ChildProcess, spawn } from "node:child_process";
import path from "node:path";
import { testEnvironment } from "../../support/service";
import { waitFor } from "./waiting";

const REPO_ROOT = path.resolve(__dirname, "..", "..", "..");

/** The real entry point, src/main.ts, running as a child process. */
export class ChildService {
  /** Parsed JSON log lines, in the order the child wrote them. */
  readonly logs: Record<string, unknown>[] = [];
  /** Lines on stdout or stderr that were not JSON. */
  readonly otherOutput: string[] = [];
  exitCode: number | null | undefined;
  exitedAt?: number;
  private readonly child: ChildProcess;

  private constructor(env: Record<string, string>) {
    this.child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let pending = "";
    const read = (chunk: Buffer) => {
      const lines = (pending + chunk.toString("utf8")).split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines.filter(Boolean)) {
        try {
          this.logs.push(JSON.parse(line));
        } catch {
          this.otherOutput.push(line);
        }
      }
    };
    this.child.stdout!.on("data", read);
    this.child.stderr!.on("data", read);
    this.child.on("exit", (code) => {
      this.exitCode = code;
      this.exitedAt = Date.now();
    });
  }

  /** Starts the service on a free port and waits until it serves. */
  static async start(
    databaseUrl: string,
    env: Record<string, string>,
  ): Promise<ChildService> {
    const service = new ChildService({
      ...testEnvironment(databaseUrl),
      LOG_LEVEL: "info",
      ...env,
    });
    await waitFor("the service to start", () => {
      if (service.exitCode !== undefined) {
        const output = [
          ...service.logs.map((line) => JSON.stringify(line)),
          ...service.otherOutput,
        ];
        throw new Error(
          `the service exited with code ${service.exitCode}: ` +
            output.slice(-5).join("\n"),
        );
      }
      return service.port() !== undefined;
    });
    return service;
  }

  /** Port from the "server started" log line, once it is written. */
  port(): number | undefined {
    const started = this.logs.find((line) => line.msg === "server started");
    return started?.port as number | undefined;
  }

  /** Index of the first log line with the message and fields, or -1. */
  indexOf(message: string, fields: Record<string, unknown> = {}): number {
    return this.logs.findIndex(
      (line) =>
        line.msg === message &&
        Object.entries(fields).every(([key, value]) => line[key] === value),
    );
  }

  signal(name: NodeJS.Signals): void {
    this.child.kill(name);
  }

  /** Waits for the process to exit and returns its exit code. */
  async exited(timeoutMs: number): Promise<number | null> {
    await waitFor(
      "the service to exit",
      () => this.exitCode !== undefined,
      timeoutMs,
    );
    return this.exitCode ?? null;
  }

  /** Kills the process if it still runs; for cleanup after a failure. */
  kill(): void {
    if (this.exitCode === undefined) {
      this.child.kill("SIGKILL");
    }
  }
}
