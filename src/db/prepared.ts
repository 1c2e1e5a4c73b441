import type { Knex } from "knex";

/**
 * A fixed statement that PostgreSQL parses and plans once per connection
 * and then runs under its name. Parsing and planning cost most of the
 * login read: in `npm run bench` on 2 vCPUs, PostgreSQL spent about 430 µs
 * of CPU a call unprepared and 60 µs prepared (docs/benchmarks.md).
 */
export interface PreparedStatement {
  /** Unique among the statements, because pg rejects a reused name. */
  name: string;
  sql: string;
}

/**
 * Runs a prepared statement. With `timeoutMs`, knex cancels the query on
 * the server (pg_cancel_backend from a separate connection) once it runs
 * that long, and rejects with KnexTimeoutError. PGlite's query options
 * have no name, so the embedded database parses the statement every time.
 */
export async function runPrepared<Row>(
  db: Knex | Knex.Transaction,
  statement: PreparedStatement,
  bindings: readonly unknown[],
  timeoutMs?: number,
): Promise<Row[]> {
  // knex's binding type has no arrays with nulls, which pg sends as SQL
  // arrays with NULL elements.
  const values = bindings as readonly Knex.RawBinding[];
  const query = db.raw(statement.sql, values).options({
    name: statement.name,
  });
  if (timeoutMs !== undefined) {
    query.timeout(timeoutMs, { cancel: true });
  }
  const result = (await query) as { rows: Row[] };
  return result.rows;
}
