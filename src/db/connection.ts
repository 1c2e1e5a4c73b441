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
      acquireConnectionTimeout: options.connectTimeoutMs,
      migrations,
    };
  }

  const filename = path.join(options.dataDir, "pglite");
  fs.mkdirSync(filename, { recursive: true });
  return {
    client: ClientPgLite,
    dialect: "postgres",
    connection: { filename },
    acquireConnectionTimeout: options.connectTimeoutMs,
    migrations,
  } as Knex.Config;
}

/** Sends knex's own warnings to the service log instead of the console. */
function knexLogger(log: Logger): Knex.Config["log"] {
  return {
    warn: (message: unknown) =>
      log.warn({ err: describeDatabaseError(message) }, "knex warning"),
    error: (message: unknown) =>
      log.error({ err: describeDatabaseError(message) }, "knex error"),
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
  try {
    await db.migrate.latest();
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return db;
}
