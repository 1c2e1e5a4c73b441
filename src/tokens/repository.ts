import type { Knex } from "knex";
import { type PreparedStatement, runPrepared } from "../db/prepared";
import type { SealedSecret } from "./cipher";

/** Manager of a token: the system (`default`) or a person (`user`). */
export type TokenKind = "default" | "user";

/** A row of api_tokens, with `expired` computed by the database clock. */
export interface TokenRecord {
  id: string;
  userId: string;
  orgId: string;
  label: string;
  kind: TokenKind;
  tokenHash: string;
  /** Null only for tokens created outside this service (user keys). */
  sealed: SealedSecret | null;
  masked: string;
  signature: string | null;
  disabled: boolean;
  /** Whether expires_at had passed when the row was read. */
  expired: boolean;
  createdAt: Date;
  updatedAt: Date;
  expiresAt: Date | null;
  lastUsedAt: Date | null;
  /** Hash of the secret a rotation replaced, kept for its grace period. */
  previousTokenHash: string | null;
  /** When the previous secret stops validating; null with no previous. */
  previousExpiresAt: Date | null;
}

/** The previous secret a rotation keeps valid for a grace period. */
export interface PreviousSecret {
  tokenHash: string;
  gracePeriodMs: number;
}

/** The secret-derived columns written together whenever a secret changes. */
export interface SecretColumns {
  tokenHash: string;
  sealed: SealedSecret;
  masked: string;
  signature: string;
}

/** A user and organization: the scope of one default token. */
export interface TokenOwner {
  userId: string;
  orgId: string;
}

/** Database handle: the shared knex instance or one transaction. */
export type Queryable = Knex | Knex.Transaction;

const TABLE = "api_tokens";
const DEFAULT_LABEL = "Default";

interface TokenRow {
  id: string;
  user_id: string;
  org_id: string;
  label: string;
  kind: TokenKind;
  token_hash: string;
  secret_key_id: string | null;
  secret_ciphertext: Buffer | null;
  secret_masked: string;
  signature: string | null;
  disabled: boolean;
  expired: boolean;
  created_at: Date;
  updated_at: Date;
  expires_at: Date | null;
  last_used_at: Date | null;
  previous_token_hash: string | null;
  previous_expires_at: Date | null;
}

// Every read names its columns rather than selecting *, so a column added
// by a later migration changes neither what a running server reads nor the
// result type of its prepared statements.
const STORED_COLUMNS = [
  "id",
  "user_id",
  "org_id",
  "label",
  "kind",
  "token_hash",
  "secret_key_id",
  "secret_ciphertext",
  "secret_masked",
  "signature",
  "disabled",
  "created_at",
  "updated_at",
  "expires_at",
  "last_used_at",
  "previous_token_hash",
  "previous_expires_at",
] as const satisfies readonly Exclude<keyof TokenRow, "expired">[];

/** The select list of a TokenRow, `expired` computed by the database clock. */
const TOKEN_COLUMNS =
  `${STORED_COLUMNS.join(", ")}, ` +
  "(expires_at is not null and expires_at <= now()) as expired";

// One owner's default token, for GetDefault and the checks and locks inside
// transactions. Logins read it in batches with FIND_DEFAULTS_FOR_LOGIN.
const FIND_DEFAULT_SQL =
  `select ${TOKEN_COLUMNS} from ${TABLE} ` +
  "where user_id = ? and org_id = ? and kind = 'default' limit 1";
const FIND_DEFAULT: PreparedStatement = {
  name: "token_service_find_default",
  sql: FIND_DEFAULT_SQL,
};
const FIND_DEFAULT_FOR_UPDATE: PreparedStatement = {
  name: "token_service_find_default_for_update",
  sql: `${FIND_DEFAULT_SQL} for update`,
};

function toRecord(row: TokenRow): TokenRecord {
  const sealed =
    row.secret_key_id !== null && row.secret_ciphertext !== null
      ? { keyId: row.secret_key_id, ciphertext: row.secret_ciphertext }
      : null;

  return {
    id: row.id,
    userId: row.user_id,
    orgId: row.org_id,
    label: row.label,
    kind: row.kind,
    tokenHash: row.token_hash,
    sealed,
    masked: row.secret_masked,
    signature: row.signature,
    disabled: row.disabled,
    expired: row.expired,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    expiresAt: row.expires_at,
    lastUsedAt: row.last_used_at,
    previousTokenHash: row.previous_token_hash,
    previousExpiresAt: row.previous_expires_at,
  };
}

/** Returns a secret's column values, ordered as SECRET_COLUMN_NAMES. */
function secretValues(secret: SecretColumns): unknown[] {
  return [
    secret.tokenHash,
    secret.sealed.keyId,
    secret.sealed.ciphertext,
    secret.masked,
    secret.signature,
  ];
}

const SECRET_COLUMN_NAMES = [
  "token_hash",
  "secret_key_id",
  "secret_ciphertext",
  "secret_masked",
  "signature",
] as const;
const SECRET_COLUMNS = SECRET_COLUMN_NAMES.join(", ");
const SECRET_ASSIGNMENTS = SECRET_COLUMN_NAMES.map(
  (column) => `${column} = ?`,
).join(", ");

// The writes of the default-token operations. Each returns the row as the
// reads do, expired computed by the database clock.
const INSERT_DEFAULT: PreparedStatement = {
  name: "token_service_insert_default",
  sql:
    `insert into ${TABLE} (id, user_id, org_id, label, kind, ` +
    `${SECRET_COLUMNS}, disabled, created_at, updated_at, expires_at) ` +
    "values (?, ?, ?, ?, 'default', ?, ?, ?, ?, ?, false, now(), now(), " +
    "now() + make_interval(days => ?)) " +
    "on conflict (user_id, org_id) where kind = 'default' do nothing " +
    `returning ${TOKEN_COLUMNS}`,
};

// SET reads the old row, so least() caps the grace period at the old
// expiry. least() ignores a null expires_at, which means "never expires".
// Without a previous secret, the CASE clears any earlier one.
const REPLACE_SECRET: PreparedStatement = {
  name: "token_service_replace_secret",
  sql:
    `update ${TABLE} set ${SECRET_ASSIGNMENTS}, ` +
    "previous_token_hash = ?, previous_expires_at = case when ?::boolean " +
    "then least(now() + make_interval(secs => ?), expires_at) end, " +
    "disabled = false, updated_at = now(), " +
    "expires_at = now() + make_interval(days => ?) " +
    `where id = ? and kind = 'default' returning ${TOKEN_COLUMNS}`,
};

const DELETE_DEFAULT: PreparedStatement = {
  name: "token_service_delete_default",
  sql:
    `delete from ${TABLE} where user_id = ? and org_id = ? ` +
    `and kind = 'default' returning ${TOKEN_COLUMNS}`,
};

/**
 * Reads the default token of an owner, or undefined. With `forUpdate` the
 * row stays locked until the transaction ends. `timeoutMs` works as in
 * runPrepared.
 */
export async function findDefaultToken(
  db: Queryable,
  owner: TokenOwner,
  options: { forUpdate?: boolean; timeoutMs?: number } = {},
): Promise<TokenRecord | undefined> {
  const statement = options.forUpdate ? FIND_DEFAULT_FOR_UPDATE : FIND_DEFAULT;
  const [row] = await runPrepared<TokenRow>(
    db,
    statement,
    [owner.userId, owner.orgId],
    options.timeoutMs,
  );
  return row ? toRecord(row) : undefined;
}

/** The stored-result columns of one idempotency key. */
export interface IdempotencyKeyRow {
  fingerprint: string;
  response: string | null;
  secret_key_id: string | null;
  secret_ciphertext: Buffer | null;
  /** Whether expires_at had passed when the row was read. */
  expired: boolean;
}

/** The columns that select one idempotency key by its primary key. */
export interface IdempotencyKeyId {
  clientService: string;
  rpc: string;
  requestId: string;
}

/** A default token read together with the stored result of a request. */
export interface TokenWithKey {
  record: TokenRecord;
  /** The request's idempotency key row; undefined when none is stored. */
  key: IdempotencyKeyRow | undefined;
}

/** One login read: an owner, and the idempotency key of its request. */
export interface LoginLookup {
  owner: TokenOwner;
  /** Omitted when the request has no request id. */
  keyId?: IdempotencyKeyId;
}

// The login read with each request's idempotency key joined in, so that a
// retried provisioning call is recognized with no second round trip. One
// statement reads both rows in one snapshot, and the change and its stored
// result commit together, so it returns both or neither. The lateral
// subqueries keep one index lookup per element, whatever PostgreSQL
// estimates the array's length to be. The key columns are prefixed with
// key_ so that they cannot shadow the token's.
const FIND_DEFAULTS_FOR_LOGIN: PreparedStatement = {
  name: "token_service_find_defaults_for_login",
  sql:
    "select r.n::int as lookup_number, t.*, k.* from unnest(" +
    "?::text[], ?::text[], ?::text[], ?::text[], ?::text[]) with ordinality " +
    "as r(user_id, org_id, client_service, rpc, request_id, n) " +
    `cross join lateral (select ${TOKEN_COLUMNS} from ${TABLE} ` +
    "where user_id = r.user_id and org_id = r.org_id and kind = 'default' " +
    "limit 1) t " +
    "left join lateral (select request_id as key_request_id, " +
    "fingerprint as key_fingerprint, response as key_response, " +
    "secret_key_id as key_secret_key_id, " +
    "secret_ciphertext as key_secret_ciphertext, " +
    "(expires_at <= now()) as key_expired from api_idempotency_keys " +
    "where client_service = r.client_service and rpc = r.rpc and " +
    "user_id = r.user_id and org_id = r.org_id and " +
    "request_id = r.request_id) k on true",
};

interface LoginRow extends TokenRow {
  lookup_number: number;
  key_request_id: string | null;
  key_fingerprint: string;
  key_response: string | null;
  key_secret_key_id: string | null;
  key_secret_ciphertext: Buffer | null;
  key_expired: boolean;
}

/**
 * Places each row at the index of the lookup it belongs to, from its
 * 1-based `lookup_number`. Lookups with no row stay undefined.
 */
function byLookup<Row extends { lookup_number: number }, T>(
  rows: Row[],
  count: number,
  convert: (row: Row) => T,
): (T | undefined)[] {
  const results = new Array<T | undefined>(count).fill(undefined);
  for (const row of rows) {
    results[row.lookup_number - 1] = convert(row);
  }
  return results;
}

function toTokenWithKey(row: LoginRow): TokenWithKey {
  const key =
    row.key_request_id === null
      ? undefined
      : {
          fingerprint: row.key_fingerprint,
          response: row.key_response,
          secret_key_id: row.key_secret_key_id,
          secret_ciphertext: row.key_secret_ciphertext,
          expired: row.key_expired,
        };
  return { record: toRecord(row), key };
}

/**
 * Reads, in one statement, the default token of each lookup's owner and
 * the idempotency key row of its request. Returns one result per lookup,
 * in order: undefined where the owner has no default token. `timeoutMs`
 * works as in runPrepared.
 */
export async function findDefaultTokensForLogin(
  db: Queryable,
  lookups: readonly LoginLookup[],
  timeoutMs?: number,
): Promise<(TokenWithKey | undefined)[]> {
  // A null request_id matches no key row.
  const rows = await runPrepared<LoginRow>(
    db,
    FIND_DEFAULTS_FOR_LOGIN,
    [
      lookups.map((lookup) => lookup.owner.userId),
      lookups.map((lookup) => lookup.owner.orgId),
      lookups.map((lookup) => lookup.keyId?.clientService ?? null),
      lookups.map((lookup) => lookup.keyId?.rpc ?? null),
      lookups.map((lookup) => lookup.keyId?.requestId ?? null),
    ],
    timeoutMs,
  );
  return byLookup(rows, lookups.length, toTokenWithKey);
}

/**
 * Inserts a default token unless the owner already has one. Returns
 * undefined on that conflict, after waiting for a concurrent inserter to
 * commit or roll back, so the caller can re-read the winner.
 */
export async function insertDefaultToken(
  trx: Knex.Transaction,
  owner: TokenOwner,
  id: string,
  secret: SecretColumns,
  lifetimeDays: number,
): Promise<TokenRecord | undefined> {
  const [row] = await runPrepared<TokenRow>(trx, INSERT_DEFAULT, [
    id,
    owner.userId,
    owner.orgId,
    DEFAULT_LABEL,
    ...secretValues(secret),
    lifetimeDays,
  ]);
  return row ? toRecord(row) : undefined;
}

/**
 * Replaces the secret of a default token in place, enables it and resets
 * its expiry to now plus `lifetimeDays`. The id and label stay. With
 * `previous`, the replaced secret's hash keeps validating for the grace
 * period; without it, the replaced secret stops at once.
 */
export async function replaceSecret(
  trx: Knex.Transaction,
  tokenId: string,
  secret: SecretColumns,
  lifetimeDays: number,
  previous: PreviousSecret | null = null,
): Promise<TokenRecord> {
  const rows = await runPrepared<TokenRow>(trx, REPLACE_SECRET, [
    ...secretValues(secret),
    previous?.tokenHash ?? null,
    previous !== null,
    (previous?.gracePeriodMs ?? 0) / 1000,
    lifetimeDays,
    tokenId,
  ]);

  if (rows.length !== 1) {
    throw new Error(`default token ${tokenId} vanished while locked`);
  }
  return toRecord(rows[0]);
}

/**
 * Deletes the default token of an owner and returns the row as it was, or
 * undefined when there was none. User keys are never matched.
 */
export async function deleteDefaultToken(
  trx: Knex.Transaction,
  owner: TokenOwner,
): Promise<TokenRecord | undefined> {
  const [row] = await runPrepared<TokenRow>(trx, DELETE_DEFAULT, [
    owner.userId,
    owner.orgId,
  ]);
  return row ? toRecord(row) : undefined;
}

/** A token found by the hash of a presented secret. */
export interface TokenMatch {
  record: TokenRecord;
  /** True when the hash is the token's previous secret, not its current. */
  previous: boolean;
  /** Whether previous_expires_at had passed when the row was read. */
  previousExpired: boolean;
}

// As in the login read, the lateral subquery keeps one index lookup per
// hash. Should two rows share a hash, the current-secret match
// wins.
const FIND_BY_HASHES: PreparedStatement = {
  name: "token_service_find_by_hashes",
  sql:
    "select r.n::int as lookup_number, x.* from unnest(?::text[]) " +
    "with ordinality as r(presented_hash, n) " +
    `cross join lateral (select ${TOKEN_COLUMNS}, ` +
    "(token_hash <> r.presented_hash) as matched_previous, " +
    "(previous_expires_at <= now()) as previous_expired " +
    `from ${TABLE} where token_hash = r.presented_hash ` +
    "or previous_token_hash = r.presented_hash " +
    "order by matched_previous limit 1) x",
};

interface HashMatchRow extends TokenRow {
  lookup_number: number;
  matched_previous: boolean;
  previous_expired: boolean | null;
}

function toTokenMatch(row: HashMatchRow): TokenMatch {
  return {
    record: toRecord(row),
    previous: row.matched_previous,
    previousExpired: row.previous_expired === true,
  };
}

/**
 * Finds, in one statement, the token of any kind whose current or previous
 * secret has each of these hashes. Returns one result per hash, in order:
 * undefined where no token matches. With random 32-byte secrets two rows
 * cannot share a hash in practice.
 */
export async function findTokensByHashes(
  db: Queryable,
  tokenHashes: readonly string[],
  timeoutMs?: number,
): Promise<(TokenMatch | undefined)[]> {
  const rows = await runPrepared<HashMatchRow>(
    db,
    FIND_BY_HASHES,
    [[...tokenHashes]],
    timeoutMs,
  );
  return byLookup(rows, tokenHashes.length, toTokenMatch);
}

const TOUCH_LAST_USED: PreparedStatement = {
  name: "token_service_touch_last_used",
  sql:
    `update ${TABLE} set last_used_at = now() where id = any(?) ` +
    "and (last_used_at is null or " +
    "last_used_at < now() - make_interval(secs => ?)) returning id",
};

/**
 * Sets last_used_at to now on each of the tokens whose last_used_at is
 * null or at least `minIntervalMs` old, in one statement, so that frequent
 * use writes at most once an interval per token. Returns the ids updated.
 */
export async function touchLastUsed(
  db: Queryable,
  tokenIds: string[],
  minIntervalMs: number,
): Promise<string[]> {
  // knex passes an array binding of a raw query through unexpanded, and pg
  // and PGlite send it as one array parameter.
  const rows = await runPrepared<{ id: string }>(db, TOUCH_LAST_USED, [
    tokenIds,
    minIntervalMs / 1000,
  ]);
  return rows.map((row) => row.id);
}
