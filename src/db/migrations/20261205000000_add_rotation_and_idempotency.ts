import type { Knex } from "knex";

/**
 * Adds the previous secret that a rotation with a grace period keeps, the
 * grace period on audit events, and the table of remembered responses that
 * makes mutating calls idempotent per request id.
 *
 * The previous secret is stored only as its hash, with a unique index so
 * that a lookup by hash finds at most one row through either column.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.alterTable("api_tokens", (table) => {
    table.text("previous_token_hash");
    table.timestamp("previous_expires_at", { useTz: true });
  });
  await knex.raw(`
    ALTER TABLE api_tokens
      ADD CONSTRAINT api_tokens_previous_hash_format_check
        CHECK (previous_token_hash ~ '^[0-9a-f]{64}$'),
      ADD CONSTRAINT api_tokens_previous_hash_differs_check
        CHECK (previous_token_hash <> token_hash),
      ADD CONSTRAINT api_tokens_previous_pair_check
        CHECK ((previous_token_hash IS NULL) = (previous_expires_at IS NULL))
  `);
  await knex.raw(`
    CREATE UNIQUE INDEX api_tokens_previous_hash_idx
      ON api_tokens (previous_token_hash)
      WHERE previous_token_hash IS NOT NULL
  `);

  await knex.schema.alterTable("api_token_events", (table) => {
    table.integer("grace_period_ms");
  });
  await knex.raw(`
    ALTER TABLE api_token_events
      ADD CONSTRAINT api_token_events_grace_period_check
        CHECK (grace_period_ms >= 0)
  `);

  await knex.schema.createTable("api_idempotency_keys", (table) => {
    table.text("client_service").notNullable();
    table.text("rpc").notNullable();
    // The owner is part of the key, so that one user's request ids never
    // collide with another's, even when a gateway forwards ids chosen by
    // its clients.
    table.text("user_id").notNullable();
    table.text("org_id").notNullable();
    table.text("request_id").notNullable();
    table.text("fingerprint").notNullable();
    // JSON of the first call's result, without its secret; null only while
    // the first call's transaction is still open.
    table.text("response");
    table.text("secret_key_id");
    table.binary("secret_ciphertext");
    table.timestamp("created_at", { useTz: true }).notNullable();
    table.timestamp("expires_at", { useTz: true }).notNullable();
    table.primary(["client_service", "rpc", "user_id", "org_id", "request_id"]);
    table.index(["expires_at"], "api_idempotency_keys_expires_idx");
  });
}

// Dropping a column also drops the checks and indexes that use it.
export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable("api_idempotency_keys");
  await knex.schema.alterTable("api_token_events", (table) => {
    table.dropColumn("grace_period_ms");
  });
  await knex.schema.alterTable("api_tokens", (table) => {
    table.dropColumn("previous_token_hash");
    table.dropColumn("previous_expires_at");
  });
}
