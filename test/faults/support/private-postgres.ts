import { execFile } from "node:child_process";
import fs from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Folder of the PostgreSQL server binaries; PG_BIN_DIR overrides it. */
const BIN_DIR = process.env.PG_BIN_DIR ?? "/usr/lib/postgresql/15/bin";

/** OS user that owns the cluster when the tests run as root. */
const CLUSTER_USER = "postgres";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() =>
        typeof address === "object" && address
          ? resolve(address.port)
          : reject(new Error("no port assigned")),
      );
    });
  });
}

/**
 * A throwaway PostgreSQL cluster in a temporary folder, on its own port, so
 * that tests can stop and start a server that no other test uses. initdb
 * rejects root, so as root the binaries run as the `postgres` OS user.
 */
export class PrivatePostgres {
  private constructor(
    readonly dataDir: string,
    readonly port: number,
    private readonly asUser: string[],
  ) {}

  /**
   * Creates and starts a cluster. Returns the reason instead when this
   * machine cannot run one (no binaries, no `postgres` user, initdb failed).
   */
  static async create(): Promise<PrivatePostgres | string> {
    if (!fs.existsSync(path.join(BIN_DIR, "initdb"))) {
      return `no initdb in ${BIN_DIR}; set PG_BIN_DIR`;
    }

    const root = process.getuid?.() === 0;
    const asUser = root ? ["runuser", "-u", CLUSTER_USER, "--"] : [];
    const base = fs.mkdtempSync(path.join(os.tmpdir(), "token-faults-pg-"));
    const dataDir = path.join(base, "data");
    try {
      if (root) {
        const { stdout } = await run("id", ["-u", CLUSTER_USER]);
        const uid = Number(stdout.trim());
        fs.chownSync(base, uid, -1);
      }
      const cluster = new PrivatePostgres(dataDir, await freePort(), asUser);
      await cluster.exec("initdb", [
        "-D",
        dataDir,
        "-U",
        "postgres",
        "-A",
        "trust",
        "--no-sync",
      ]);
      await cluster.start();
      return cluster;
    } catch (err) {
      fs.rmSync(base, { recursive: true, force: true });
      return `could not start a private PostgreSQL: ${(err as Error).message}`;
    }
  }

  /** Connection URL of a database on this cluster. */
  url(database = "postgres"): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** Starts the server and waits until it accepts connections. */
  async start(): Promise<void> {
    const options =
      `-p ${this.port} -c listen_addresses=127.0.0.1 ` +
      `-c unix_socket_directories=${path.dirname(this.dataDir)} ` +
      `-c fsync=off -c max_connections=50`;
    await this.exec("pg_ctl", [
      "start",
      "-w",
      "-D",
      this.dataDir,
      "-l",
      path.join(path.dirname(this.dataDir), "server.log"),
      "-o",
      options,
    ]);
  }

  /** Stops the server in fast mode, which ends every session at once. */
  async stop(): Promise<void> {
    await this.exec("pg_ctl", ["stop", "-w", "-m", "fast", "-D", this.dataDir]);
  }

  /** Stops the server if it runs and deletes its folder. */
  async remove(): Promise<void> {
    try {
      await this.stop();
    } catch {
      // Already stopped.
    }
    fs.rmSync(path.dirname(this.dataDir), { recursive: true, force: true });
  }

  private async exec(binary: string, args: string[]): Promise<void> {
    const command = [...this.asUser, path.join(BIN_DIR, binary), ...args];
    await run(command[0], command.slice(1), { timeout: 60_000 });
  }
}
