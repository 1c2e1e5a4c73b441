import { randomBytes, randomUUID } from "node:crypto";
import knex, { type Knex } from "knex";
import { openDatabase } from "../src/db/connection";
import type { EncryptionKey } from "../src/config";
import { createLogger } from "../src/logger";
import { SecretCipher } from "../src/tokens/cipher";
import { hashSecret, maskSecret, signSecret } from "../src/tokens/secret";
import {
  BENCH_ORG_ID,
  benchSecret,
  sealedUserNumber,
  strideOf,
  type TableShape,
} from "./table";

/** Keys the service under test runs with; sealed rows use the same. */
export interface BenchKeys {
  encryptionKey: EncryptionKey;
  signingSecret: Buffer;
}

/**
 * Makes fresh keys for one bench run. The service reads
 * TOKEN_SIGNING_SECRET as UTF-8 text, so the signing secret is base64
 * text, as `openssl rand -base64 32` makes it.
 */
export function createBenchKeys(): BenchKeys {
  const signingSecret = randomBytes(32).toString("base64");
  return {
    encryptionKey: { id: "bench", key: randomBytes(32) },
    signingSecret: Buffer.from(signingSecret, "utf8"),
  };
}

/** Rows of sealed users written in one INSERT. */
const SEALED_BATCH = 500;

/** Lifetime of every seeded token; far longer than any run. */
const SEED_LIFETIME = "90 days";

/** Builds the URL of another database on the server of `adminUrl`. */
export function databaseUrlOf(adminUrl: string, name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function withAdmin<T>(
  adminUrl: string,
  work: (admin: Knex) => Promise<T>,
): Promise<T> {
  const admin = knex({ client: "pg", connection: adminUrl });
  try {
    return await work(admin);
  } finally {
    await admin.destroy();
  }
}

/** Drops a bench database, ending its sessions. */
export function dropBenchDatabase(adminUrl: string, name: string) {
  return withAdmin(adminUrl, (admin) =>
    admin.raw(`drop database if exists "${name}" with (force)`),
  );
}

/**
 * Writes every row except the sealed users' in one INSERT ... SELECT. The
 * secret of user n is computed in SQL exactly as benchSecret(n) does, so
 * its token_hash is real. The ciphertext and signature are filler of the
 * right length, under a key id the service does not have.
 */
async function insertFillerRows(db: Knex, table: TableShape): Promise<void> {
  await db.raw(
    `
    insert into api_tokens (
      id, user_id, org_id, label, kind, token_hash, secret_key_id,
      secret_ciphertext, secret_masked, signature, disabled,
      created_at, updated_at, expires_at)
    select
      gen_random_uuid(), s.n::text, :org, 'Default', 'default',
      encode(sha256(convert_to(s.secret, 'UTF8')), 'hex'),
      'bench-filler',
      substring(sha256(convert_to('iv' || s.secret, 'UTF8'))
        || sha256(convert_to('tag' || s.secret, 'UTF8'))
        || sha256(convert_to('body' || s.secret, 'UTF8')) for 75),
      left(s.secret, 12) || '...' || right(s.secret, 4),
      'sig_' || encode(sha256(convert_to('sig' || s.secret, 'UTF8')), 'hex'),
      false, now(), now(), now() + :lifetime::interval
    from (
      select n, 'vtk_' || translate(rtrim(encode(
        sha256(convert_to('token-service-bench:' || n, 'UTF8')),
        'base64'), '='), '+/', '-_') as secret
      from generate_series(1, :rows::int) as n
      where (n - 1) % :stride::int <> 0
        or (n - 1) / :stride::int >= :sealed::int
    ) as s
    `,
    {
      org: BENCH_ORG_ID,
      lifetime: SEED_LIFETIME,
      rows: table.rows,
      stride: strideOf(table),
      sealed: table.benchUsers,
    },
  );
}

/** Writes the sealed users' rows, sealed and signed as the service does. */
async function insertSealedRows(
  db: Knex,
  table: TableShape,
  keys: BenchKeys,
): Promise<void> {
  const cipher = new SecretCipher(keys.encryptionKey);

  for (let first = 0; first < table.benchUsers; first += SEALED_BATCH) {
    const rows = [];
    const last = Math.min(table.benchUsers, first + SEALED_BATCH);
    for (let k = first; k < last; k++) {
      const userNumber = sealedUserNumber(table, k);
      const secret = benchSecret(userNumber);
      const id = randomUUID();
      const sealed = cipher.seal(secret, id);
      rows.push({
        id,
        user_id: String(userNumber),
        org_id: BENCH_ORG_ID,
        label: "Default",
        kind: "default",
        token_hash: hashSecret(secret),
        secret_key_id: sealed.keyId,
        secret_ciphertext: sealed.ciphertext,
        secret_masked: maskSecret(secret),
        signature: signSecret(secret, keys.signingSecret),
        disabled: false,
        created_at: db.fn.now(),
        updated_at: db.fn.now(),
        expires_at: db.raw("now() + ?::interval", [SEED_LIFETIME]),
      });
    }
    await db("api_tokens").insert(rows);
  }
}

/**
 * Creates database `name` with the service's schema and fills it with
 * `table.rows` valid default tokens, then vacuums and analyzes it so that
 * the first measured reads do not pay for hint bits or stale statistics.
 * Returns the database's URL.
 */
export async function seedBenchDatabase(
  adminUrl: string,
  name: string,
  table: TableShape,
  keys: BenchKeys,
): Promise<string> {
  if (table.benchUsers > table.rows) {
    throw new Error(
      `cannot seal ${table.benchUsers} users in a table of ${table.rows} rows`,
    );
  }
  await withAdmin(adminUrl, async (admin) => {
    await admin.raw(`drop database if exists "${name}" with (force)`);
    await admin.raw(`create database "${name}"`);
  });

  const databaseUrl = databaseUrlOf(adminUrl, name);
  // Seeding runs statements of a minute or more, so no statement_timeout.
  const db = await openDatabase(
    {
      databaseUrl,
      dataDir: "",
      poolMax: 2,
      connectTimeoutMs: 10_000,
      statementTimeoutMs: 0,
      acquireTimeoutMs: 60_000,
    },
    createLogger("warn"),
  );
  try {
    await insertFillerRows(db, table);
    await insertSealedRows(db, table, keys);
    await db.raw("vacuum analyze api_tokens");
  } finally {
    await db.destroy();
  }
  return databaseUrl;
}
