import { createHash } from "node:crypto";
import type { Knex } from "knex";
import { describeDatabaseError } from "../db/errors";
import { type PreparedStatement, runPrepared } from "../db/prepared";
import type { Logger } from "../logger";
import type { AuditSource } from "./audit";
import type { SecretCipher } from "./cipher";
import { InvalidArgumentError, TransactionAbortedError } from "./errors";
import type { IdempotencyKeyRow, Queryable, TokenOwner } from "./repository";

/** One call as the idempotency table keys and compares it. */
export interface IdempotencyKey {
  clientService: string;
  rpc: string;
  userId: string;
  orgId: string;
  requestId: string;
  /** Lowercase hex SHA-256 of the canonical request. */
  fingerprint: string;
}

/** Decides whether a stored result may still be sent again. */
export type StoredResultCheck<T> = (
  trx: Knex.Transaction,
  stored: T,
) => Promise<boolean>;

/** A remembered result to send again, or undefined when there is none. */
export type Replay<T> = { result: T } | undefined;

const TABLE = "api_idempotency_keys";

/** Maximum number of expired rows one clean-up statement deletes. */
// NOTE: one batch a minute per process is a guess, not a measured rate. A
// replica whose keys expire faster than that leaves a backlog, which costs
// space but not correctness, because an expired key is taken over on reuse.
const CLEANUP_BATCH_SIZE = 1000;

// Result fields left out of the stored JSON. The sealed secret and hashes
// are not needed to rebuild a response, so a replayed record has them null.
const OMITTED_FIELDS = new Set(["sealed", "tokenHash", "previousTokenHash"]);
// Result fields stored only inside the encrypted payload.
const SEALED_FIELDS = new Set(["secret", "signature"]);
const SEALED_MARKER = "$sealed";
const DATE_MARKER = "$date";

/**
 * Builds the idempotency key of a request, or returns undefined when the
 * request has no request id or no fingerprint and so always runs.
 */
export function idempotencyKeyOf(
  source: AuditSource & { owner: TokenOwner; fingerprint?: string },
): IdempotencyKey | undefined {
  if (source.audit.requestId === "" || source.fingerprint === undefined) {
    return undefined;
  }
  return {
    clientService: source.clientService,
    rpc: source.rpc,
    userId: source.owner.userId,
    orgId: source.owner.orgId,
    requestId: source.audit.requestId,
    fingerprint: source.fingerprint,
  };
}

/** Computes the fingerprint of a request from its canonical bytes. */
export function fingerprintRequest(rpc: string, canonical: Uint8Array): string {
  return createHash("sha256")
    .update(rpc, "utf8")
    .update("\n")
    .update(canonical)
    .digest("hex");
}

/**
 * Serializes a result to JSON, moving its secret and signature out into one
 * JSON text that the caller encrypts, so that neither is stored in plain
 * text. Dates survive the round trip.
 */
function encodeResult(result: unknown): { json: string; sealed?: string } {
  const sealedValues: Record<string, string> = {};
  const json = JSON.stringify(
    { result },
    function (this: Record<string, unknown>, key, value: unknown) {
      const raw = this[key];
      if (raw instanceof Date) {
        return { [DATE_MARKER]: raw.toISOString() };
      }
      if (OMITTED_FIELDS.has(key)) {
        return null;
      }
      if (SEALED_FIELDS.has(key) && typeof raw === "string" && raw !== "") {
        const earlier = sealedValues[key];
        if (earlier !== undefined && earlier !== raw) {
          throw new Error(`a remembered result may contain only one ${key}`);
        }
        sealedValues[key] = raw;
        return { [SEALED_MARKER]: key };
      }
      return value;
    },
  );

  const empty = Object.keys(sealedValues).length === 0;
  return { json, sealed: empty ? undefined : JSON.stringify(sealedValues) };
}

function decodeResult<T>(json: string, sealed: string | undefined): T {
  const sealedValues = (sealed ? JSON.parse(sealed) : {}) as Record<
    string,
    string
  >;
  const parsed = JSON.parse(json, (_key, value: unknown) => {
    if (typeof value === "object" && value !== null) {
      const marked = value as Record<string, unknown>;
      if (typeof marked[DATE_MARKER] === "string") {
        return new Date(marked[DATE_MARKER]);
      }
      if (typeof marked[SEALED_MARKER] === "string") {
        return sealedValues[marked[SEALED_MARKER]];
      }
    }
    return value;
  }) as { result: T };
  return parsed.result;
}

/** The primary-key columns, in the order the statements bind them. */
const KEY_COLUMN_NAMES = [
  "client_service",
  "rpc",
  "user_id",
  "org_id",
  "request_id",
] as const;
const KEY_COLUMNS = KEY_COLUMN_NAMES.join(", ");
const KEY_MATCHES = KEY_COLUMN_NAMES.map((column) => `${column} = ?`).join(
  " and ",
);

/** Returns a key's primary-key values, ordered as KEY_COLUMN_NAMES. */
function keyValues(key: IdempotencyKey): string[] {
  const values = whereKey(key);
  return KEY_COLUMN_NAMES.map((column) => values[column]);
}

// Inserts the key, or takes over an expired one: ON CONFLICT DO UPDATE
// clears the stored result and renews the key only when the WHERE holds.
const CLAIM_KEY: PreparedStatement = {
  name: "token_service_claim_idempotency_key",
  sql:
    `insert into ${TABLE} (${KEY_COLUMNS}, fingerprint, created_at, ` +
    "expires_at) values (?, ?, ?, ?, ?, ?, now(), " +
    "now() + make_interval(secs => ?)) " +
    `on conflict (${KEY_COLUMNS}) do update set ` +
    "fingerprint = excluded.fingerprint, response = excluded.response, " +
    "secret_key_id = excluded.secret_key_id, " +
    "secret_ciphertext = excluded.secret_ciphertext, " +
    "created_at = excluded.created_at, expires_at = excluded.expires_at " +
    `where ${TABLE}.expires_at <= now() returning request_id`,
};

const STORE_RESULT: PreparedStatement = {
  name: "token_service_store_idempotent_result",
  sql:
    `update ${TABLE} set response = ?, secret_key_id = ?, ` +
    `secret_ciphertext = ? where ${KEY_MATCHES}`,
};

function whereKey(key: IdempotencyKey) {
  return {
    client_service: key.clientService,
    rpc: key.rpc,
    user_id: key.userId,
    org_id: key.orgId,
    request_id: key.requestId,
  };
}

/**
 * Remembers the results of mutating calls by request id, so that a retry
 * gets the first call's result instead of a second change. The result is
 * stored in the transaction of the change, with its secret encrypted by
 * the SecretCipher and bound to the request's fingerprint.
 */
export class IdempotencyStore {
  private lastCleanupMs = 0;

  constructor(
    private readonly cipher: SecretCipher,
    /** Seconds a stored result is replayed. */
    readonly ttlSeconds: number,
  ) {}

  /**
   * Claims the key in `trx` and runs `work`, storing its result under the
   * key, or returns the result a committed call already stored. When
   * `isCurrent` rejects the stored result, `work` runs again and its result
   * replaces the stored one.
   *
   * @throws InvalidArgumentError when the key was used for another request.
   */
  async runOnce<T>(
    trx: Knex.Transaction,
    key: IdempotencyKey,
    log: Logger,
    work: (trx: Knex.Transaction) => Promise<T>,
    isCurrent?: StoredResultCheck<T>,
  ): Promise<T> {
    const replay = await this.claim<T>(trx, key);
    if (replay) {
      if (!isCurrent || (await isCurrent(trx, replay.result))) {
        log.info("replayed the stored response of a retried request id");
        return replay.result;
      }
      log.info(
        "ran a retried request id again because its stored response is stale",
      );
    }

    const result = await work(trx);
    await this.remember(trx, key, result);
    return result;
  }

  /**
   * Claims the key for this transaction, or returns the result a committed
   * call stored under it. A concurrent claimant's uncommitted insert makes
   * this wait on the primary key until that transaction ends, so at most
   * one call per key makes the change. An expired key is taken over.
   *
   * @throws InvalidArgumentError when the key was used for another request.
   */
  private async claim<T>(
    trx: Knex.Transaction,
    key: IdempotencyKey,
  ): Promise<Replay<T>> {
    const claimed = await runPrepared(trx, CLAIM_KEY, [
      ...keyValues(key),
      key.fingerprint,
      this.ttlSeconds,
    ]);
    if (claimed.length > 0) {
      return undefined;
    }

    // ON CONFLICT DO UPDATE locks the conflicting row even when its WHERE
    // is false, so the row read here stays as it is until commit.
    const row = await this.read(trx, key);
    if (!row || row.response === null) {
      throw new TransactionAbortedError(
        "a concurrent call with the same audit.request_id is still " +
          "running; retry the call",
      );
    }
    return this.replay<T>(row, key);
  }

  /**
   * Returns the result stored in a key row read outside any transaction,
   * or undefined when there is no row, it expired or its call is still
   * running.
   *
   * @throws InvalidArgumentError when the key was used for another request.
   */
  replayStored<T>(
    row: IdempotencyKeyRow | undefined,
    key: IdempotencyKey,
  ): Replay<T> {
    if (!row || row.expired || row.response === null) {
      return undefined;
    }
    return this.replay<T>(row, key);
  }

  /** Stores the result of the call that claimed the key. */
  private async remember(
    trx: Knex.Transaction,
    key: IdempotencyKey,
    result: unknown,
  ): Promise<void> {
    const { json, sealed: plaintext } = encodeResult(result);
    const sealed =
      plaintext === undefined
        ? undefined
        : this.cipher.seal(plaintext, this.associatedData(key));

    await runPrepared(trx, STORE_RESULT, [
      json,
      sealed?.keyId ?? null,
      sealed?.ciphertext ?? null,
      ...keyValues(key),
    ]);
  }

  /** Starts `deleteExpired` without waiting, logging its outcome. */
  deleteExpiredInBackground(db: Knex, log: Logger): void {
    this.deleteExpired(db).then(
      (count) => {
        if (count > 0) {
          log.info({ count }, "deleted expired idempotency keys");
        }
      },
      (err: unknown) =>
        log.warn(
          { err: describeDatabaseError(err) },
          "failed to delete expired idempotency keys; the next call retries",
        ),
    );
  }

  /**
   * Deletes a batch of expired keys, at most once a minute per process.
   * Returns the number deleted.
   */
  async deleteExpired(db: Knex): Promise<number> {
    const now = Date.now();
    if (now - this.lastCleanupMs < 60_000) {
      return 0;
    }
    this.lastCleanupMs = now;

    const expired = db(TABLE)
      .select("ctid")
      .where("expires_at", "<=", db.fn.now())
      .limit(CLEANUP_BATCH_SIZE);
    return db(TABLE).whereIn("ctid", expired).delete();
  }

  private async read(
    db: Queryable,
    key: IdempotencyKey,
  ): Promise<IdempotencyKeyRow | undefined> {
    return db(TABLE)
      .select(
        "fingerprint",
        "response",
        "secret_key_id",
        "secret_ciphertext",
        db.raw("(expires_at <= now()) as expired"),
      )
      .where(whereKey(key))
      .first();
  }

  private replay<T>(row: IdempotencyKeyRow, key: IdempotencyKey): Replay<T> {
    if (row.fingerprint !== key.fingerprint) {
      throw new InvalidArgumentError([
        {
          field: "audit.request_id",
          description:
            `audit.request_id ${JSON.stringify(key.requestId)} was already ` +
            `used for a different ${key.rpc} request; send a new ` +
            `request_id for a new request`,
        },
      ]);
    }

    const plaintext =
      row.secret_key_id !== null && row.secret_ciphertext !== null
        ? this.cipher.open(
            { keyId: row.secret_key_id, ciphertext: row.secret_ciphertext },
            this.associatedData(key),
          )
        : undefined;
    return { result: decodeResult<T>(row.response!, plaintext) };
  }

  // SecretCipher binds a ciphertext to a string; here the request's
  // fingerprint, so a ciphertext copied to another key fails to decrypt.
  private associatedData(key: IdempotencyKey): string {
    return `idempotency:${key.fingerprint}`;
  }
}
