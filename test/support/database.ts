import knex, { type Knex } from "knex";

/** Server the tests use; every test run makes its own database on it. */
export const ADMIN_DATABASE_URL =
  process.env.TEST_DATABASE_URL ??
  "postgres://postgres@127.0.0.1:5432/postgres";

/** Builds the URL of another database on the same server. */
export function databaseUrl(name: string): string {
  const url = new URL(ADMIN_DATABASE_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

async function withAdmin<T>(work: (admin: Knex) => Promise<T>): Promise<T> {
  const admin = knex({ client: "pg", connection: ADMIN_DATABASE_URL });
  try {
    return await work(admin);
  } finally {
    await admin.destroy();
  }
}

/** Creates an empty database and returns its URL. */
export async function createDatabase(name: string): Promise<string> {
  await withAdmin(async (admin) => {
    await admin.raw(`drop database if exists "${name}" with (force)`);
    await admin.raw(`create database "${name}"`);
  });
  return databaseUrl(name);
}

/** Drops a database made by createDatabase, ending its sessions. */
export async function dropDatabase(name: string): Promise<void> {
  await withAdmin((admin) =>
    admin.raw(`drop database if exists "${name}" with (force)`),
  );
}

/** Opens a separate connection pool, for tests that act beside the service. */
export function connect(url: string, poolMax = 4): Knex {
  return knex({
    client: "pg",
    connection: url,
    pool: { min: 0, max: poolMax },
  });
}
