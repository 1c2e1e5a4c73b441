import type { Knex } from "knex";
import * as createApiTokens from "./20261204000000_create_api_tokens";
import * as addRotationAndIdempotency from "./20261205000000_add_rotation_and_idempotency";

const migrations: Record<string, Knex.Migration> = {
  "20261204000000_create_api_tokens": createApiTokens,
  "20261205000000_add_rotation_and_idempotency": addRotationAndIdempotency,
};

/**
 * Lists the migrations by import rather than by scanning a folder, so the
 * same list runs from TypeScript sources, from compiled JavaScript and from
 * the knex command line.
 */
export const migrationSource: Knex.MigrationSource<string> = {
  getMigrations: async () => Object.keys(migrations).sort(),
  getMigrationName: (name) => name,
  getMigration: async (name) => migrations[name],
};
