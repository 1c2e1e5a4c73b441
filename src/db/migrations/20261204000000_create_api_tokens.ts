import type { Knex } from "knex";

/**
 * Creates the token and audit event tables. All times are timestamptz, the
 * secret is stored only as AES-256-GCM ciphertext, and the partial unique
 * index keeps at most one default token per (user_id, org_id) even when no
 * row exists yet for SELECT ... FOR UPDATE to lock.
 */
export async function up(knex: Knex): Promise<void> {
  await knex.schema.createTable("api_tokens", (table) => {
    table.uuid("id").primary();
    table.text("user_id").notNullable();
    table.text("org_id").notNullable().defaultTo("");
    table.text("label").notNullable();
    table.text("kind").notNullable();
    table.text("token_hash").notNullable().unique();
    table.text("secret_key_id");
    table.binary("secret_ciphertext");
    table.text("secret_masked").notNullable();
    table.text("signature");
    table.boolean("disabled").notNullable().defaultTo(false);
    table.timestamp("created_at", { useTz: true }).notNullable();
    table.timestamp("updated_at", { useTz: true }).notNullable();
    table.timestamp("expires_at", { useTz: true });
    table.timestamp("last_used_at", { useTz: true });
    table.index(["user_id", "org_id"], "api_tokens_user_org_idx");
  });

  await knex.raw(`
    ALTER TABLE api_tokens
      ADD CONSTRAINT api_tokens_kind_check CHECK (kind IN ('default', 'user')),
      ADD CONSTRAINT api_tokens_hash_format_check
        CHECK (token_hash ~ '^[0-9a-f]{64}$'),
      ADD CONSTRAINT api_tokens_default_secret_check
        CHECK (kind <> 'default'
          OR (secret_ciphertext IS NOT NULL AND secret_key_id IS NOT NULL))
  `);
  await knex.raw(`
    CREATE UNIQUE INDEX api_tokens_one_default_idx
      ON api_tokens (user_id, org_id) WHERE kind = 'default'
  `);

  await knex.schema.createTable("api_token_events", (table) => {
    table.bigIncrements("id");
    table.uuid("token_id").notNullable();
    table.text("user_id").notNullable();
    table.text("org_id").notNullable();
    table.text("action").notNullable();
    table.text("reason");
    table.text("label").notNullable();
    table.text("kind").notNullable();
    table.text("masked").notNullable();
    table.text("rpc").notNullable();
    table.text("client_service").notNullable().defaultTo("");
    table.text("request_id").notNullable().defaultTo("");
    table.text("actor_id").notNullable().defaultTo("");
    table.text("client_ip").notNullable().defaultTo("");
    table.text("user_agent").notNullable().defaultTo("");
    table.timestamp("created_at", { useTz: true }).notNullable();
    table.index(["user_id", "org_id", "id"], "api_token_events_user_org_idx");
    table.index(["token_id"], "api_token_events_token_idx");
  });

  await knex.raw(`
    ALTER TABLE api_token_events
      ADD CONSTRAINT api_token_events_action_check
        CHECK (action IN ('create', 'regenerate', 'delete'))
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.schema.dropTable("api_token_events");
  await knex.schema.dropTable("api_tokens");
}
