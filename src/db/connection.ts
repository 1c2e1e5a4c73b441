import fs from "node:fs";
import path from "node:path";
import knex, { type Knex } from "knex";
import ClientPgLite from "knex-pglite";
import type { Logger } from "../logger";
import { describeDatabaseError } from "./errors";
import { migrationSource } from "./migrations";

/** Connection settings of the database. */
export interface DatabaseOptions {
  /** PostgreSQL connection string; unset selects the embedded PGlite. */
  databaseUrl?: string;
  /** Folder of the embedded database; used only without databaseUrl. */
  dataDir: string;
  poolMax: number;
  connectTimeoutMs: number;
  /** Default statement_timeout of every connection, in milliseconds. */
  statementTimeoutMs: number;
  /**
   * Milliseconds a query waits for a free pool connection. Kept apart from
   * the connect timeout: under load, calls queue for a connection far
   * longer than a healthy server takes to accept one.
   */
  acquireTimeoutMs: number;
}

/** Returns whether a process with this id is running. */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Takes the embedded database's folder for this process. PGlite is a
 * single-user database: two processes writing one folder each see their
 * own copy and corrupt it, so a second one must fail at start. The lock is
 * a file with the owner's process id. A lock whose process has ended is
 * taken over, and the file is removed when this process exits.
 *
 * @throws Error naming the process that has the folder locked.
 */
function lockDataDir(dataDir: string): void {
  const lockFile = path.join(dataDir, "pglite.pid");

  // Creating the file with the `wx` flag fails when it exists, so of two
  // processes that start together only one takes the lock.
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(lockFile, String(process.pid), {
        flag: "wx",
        mode: 0o600,
      });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") {
        throw err;
      }
    }

    const owner = Number.parseInt(fs.readFileSync(lockFile, "utf8"), 10);
    if (owner === process.pid) {
      return;
    }
    if (attempt === 1 || (Number.isInteger(owner) && isRunning(owner))) {
      throw new Error(
        `the embedded database in ${dataDir} is in use by process ${owner}; ` +
          `stop that process or set another DATA_DIR (if no such server ` +
          `runs, delete ${lockFile})`,
      );
    }
    fs.rmSync(lockFile, { force: true });
  }

  process.once("exit", () => {
    const current = fs.existsSync(lockFile)
      ? fs.readFileSync(lockFile, "utf8")
      : "";
    if (current === String(process.pid)) {
      fs.rmSync(lockFile, { force: true });
    }
  });
}

/** knex settings for PostgreSQL through pg, or for PGlite in `dataDir`. */
export function buildKnexConfig(options: DatabaseOptions): Knex.Config {
  const migrations = { migrationSource, tableName: "knex_migrations" };

  if (options.databaseUrl) {
    return {
      client: "pg",
      connection: {
        connectionString: options.databaseUrl,
        connectionTimeoutMillis: options.connectTimeoutMs,
        application_name: "token-service",
        // Bounds statements outside transactions, such as the read-only
        // lookup on the login path; transactions set their own.
        statement_timeout: options.statementTimeoutMs,
      },
      pool: { min: 0, max: options.poolMax },
      acquireConnectionTimeout: options.acquireTimeoutMs,
      migrations,
    };
  }

  // The data folder contains the database and the development keys, so only
  // the service's user may enter it, whatever modes PGlite gives its files.
  const filename = path.join(options.dataDir, "pglite");
  fs.mkdirSync(filename, { recursive: true, mode: 0o700 });
  fs.chmodSync(options.dataDir, 0o700);
  lockDataDir(options.dataDir);
  return {
    client: ClientPgLite,
    dialect: "postgres",
    connection: { filename },
    acquireConnectionTimeout: options.acquireTimeoutMs,
    migrations,
  } as Knex.Config;
}

/** Shortest time between two log lines of the same knex message. */
const REPEAT_INTERVAL_MS = 60_000;

/**
 * Sends knex's own warnings to the service log instead of the console. While
 * the database is down, knex repeats the same warning on every connection
 * attempt, so each distinct message is logged at most once a minute, with
 * the number of repeats held back since its last line.
 */
function knexLogger(log: Logger): Knex.Config["log"] {
  const lastLogged = new Map<string, { at: number; repeats: number }>();

  const write = (level: "warn" | "error", message: unknown) => {
    const err = describeDatabaseError(message);
    const key = `${level} ${String(err.message)}`;
    const now = Date.now();
    const last = lastLogged.get(key);
    if (last && now - last.at < REPEAT_INTERVAL_MS) {
      last.repeats += 1;
      return;
    }

    lastLogged.set(key, { at: now, repeats: 0 });
    log[level]({ err, repeats: last?.repeats ?? 0 }, `knex ${level}`);
  };

  return {
    warn: (message: unknown) => write("warn", message),
    error: (message: unknown) => write("error", message),
    deprecate: (method: string, alternative: string) =>
      log.warn({ method, alternative }, "knex deprecation"),
    debug: () => undefined,
  };
}

/** Opens the database and brings its schema up to date. */
export async function openDatabase(
  options: DatabaseOptions,
  log: Logger,
): Promise<Knex> {
  const db = knex({ ...buildKnexConfig(options), log: knexLogger(log) });
  let applied: string[];
  try {
    [, applied] = (await db.migrate.latest()) as [number, string[]];
  } catch (err) {
    await db.destroy();
    throw err;
  }

  if (applied.length > 0) {
    log.info({ migrations: applied }, "applied database migrations");
  } else {
    log.debug("database schema is up to date");
  }
  return db;
}
