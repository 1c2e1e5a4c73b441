import fs from "node:fs";
import path from "node:path";
import knex, { type Knex } from "knex";
import ClientPgLite from "knex-pglite";
import { migrationSource } from "./migrations";

/** Where and how to connect. */
export interface DatabaseOptions {
  /** PostgreSQL connection string; unset selects the embedded PGlite. */
  databaseUrl?: string;
  /** Folder of the embedded database; used only without databaseUrl. */
  dataDir: string;
  poolMax: number;
  connectTimeoutMs: number;
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

/** Opens the database and brings its schema up to date. */
export async function openDatabase(options: DatabaseOptions): Promise<Knex> {
  const db = knex(buildKnexConfig(options));
  try {
    await db.migrate.latest();
  } catch (err) {
    await db.destroy();
    throw err;
  }
  return db;
}
