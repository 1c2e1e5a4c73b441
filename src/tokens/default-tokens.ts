import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import {
  batchTimeoutMs,
  HOT_READ_BATCHING,
  ReadBatcher,
  type TimedLookup,
} from "../db/read-batcher";
import {
  type CallScope,
  runTransaction,
  statementBudgetMs,
  translateDatabaseError,
  type TransactionSettings,
} from "../db/transaction";
import {
  type AuditEventRecord,
  type AuditReason,
  type AuditSource,
  findAuditEvents,
  recordAuditEvent,
} from "./audit";
import type { SecretCipher } from "./cipher";
import {
  DefaultTokenExistsError,
  DefaultTokenNotFoundError,
  TransactionAbortedError,
} from "./errors";
import {
  IdempotencyStore,
  idempotencyKeyOf,
  type Replay,
  type StoredResultCheck,
} from "./idempotency";
import {
  deleteDefaultToken,
  findDefaultToken,
  findDefaultTokensForLogin,
  insertDefaultToken,
  type LoginLookup,
  type PreviousSecret,
  replaceSecret,
  type SecretColumns,
  type TokenOwner,
  type TokenRecord,
  type TokenWithKey,
} from "./repository";
import { generateSecret, hashSecret, maskSecret, signSecret } from "./secret";

/** Default of DefaultTokenSettings.idempotencyTtlSeconds: one day. */
export const DEFAULT_IDEMPOTENCY_TTL_SECONDS = 86_400;

/** Maximum assumed difference between this host's and the database's clock. */
const CLOCK_SKEW_MARGIN_MS = 60_000;

/** Settings of the default-token operations. */
export interface DefaultTokenSettings {
  /** Days from creation or regeneration to expiry. */
  lifetimeDays: number;
  transaction: TransactionSettings;
  /** Seconds a remembered response is replayed to retries of its request id. */
  idempotencyTtlSeconds?: number;
}

/** A request for one owner's default token, with its audit facts. */
export interface DefaultTokenRequest extends AuditSource {
  owner: TokenOwner;
  /**
   * SHA-256 of the canonical request. With a non-empty audit.requestId it
   * makes the call idempotent; without one, every call runs.
   */
  fingerprint?: string;
}

/** The outcome of Regenerate. */
export interface RegenerateResult {
  token: IssuedToken;
  created: boolean;
  /** When the replaced secret stops validating; null when it stopped. */
  graceEndsAt: Date | null;
}

/** Called with a token's id after a committed change to it. */
export type TokenChangeListener = (tokenId: string) => void;

/** A token with the secret the caller may see, and its signature. */
export interface IssuedToken {
  record: TokenRecord;
  /** The bearer secret; undefined where the operation does not hand it out. */
  secret?: string;
  /** Signature of the secret; empty when neither is known. */
  signature: string;
}

/**
 * Insert-or-lock rounds one transaction makes before ABORTED. A round fails
 * only when a concurrent Delete removes the row that blocked the insert, so
 * each retry follows another call's commit.
 */
const MAX_INSERT_ATTEMPTS = 3;

/** The outcome of GetOrProvision. */
export interface ProvisionResult {
  token: IssuedToken;
  /** True when the call created or replaced the token. */
  provisioned: boolean;
}

/** A stored secret that no longer matches its hash: a corrupted row. */
export class TokenIntegrityError extends Error {
  override name = "TokenIntegrityError";
}

/** Returns whether a token authenticates its holder now. */
export function isValid(record: TokenRecord): boolean {
  return !record.disabled && !record.expired;
}

/**
 * The four default-token operations. Each change runs in one transaction
 * together with its audit event; user keys (kind `user`) are never matched.
 */
export class DefaultTokens {
  private readonly idempotency: IdempotencyStore;
  private readonly changeListeners: TokenChangeListener[] = [];
  private readonly loginReads: ReadBatcher<
    LoginLookup & TimedLookup,
    TokenWithKey
  >;

  constructor(
    private readonly db: Knex,
    private readonly cipher: SecretCipher,
    private readonly signingSecret: Buffer,
    private readonly settings: DefaultTokenSettings,
  ) {
    this.idempotency = new IdempotencyStore(
      cipher,
      settings.idempotencyTtlSeconds ?? DEFAULT_IDEMPOTENCY_TTL_SECONDS,
    );
    this.loginReads = new ReadBatcher(
      (lookups) =>
        findDefaultTokensForLogin(db, lookups, batchTimeoutMs(lookups)),
      HOT_READ_BATCHING,
    );
  }

  /** Registers a listener for committed changes, such as a cache. */
  onTokenChanged(listener: TokenChangeListener): void {
    this.changeListeners.push(listener);
  }

  /**
   * Returns the default token with its secret, whatever its status.
   *
   * @throws DefaultTokenNotFoundError when the owner has none.
   */
  async getDefault(scope: CallScope, owner: TokenOwner): Promise<IssuedToken> {
    const record = await this.read(scope, owner);
    if (!record) {
      throw new DefaultTokenNotFoundError(
        "call GetOrProvision or CreateDefault to create one",
      );
    }
    return this.reveal(record);
  }

  /**
   * Creates the default token.
   *
   * @throws DefaultTokenExistsError with the existing token's id.
   */
  async createDefault(
    scope: CallScope,
    request: DefaultTokenRequest,
  ): Promise<IssuedToken> {
    const token = await this.transactOnce(scope, request, async (trx) => {
      for (let attempt = 1; attempt <= MAX_INSERT_ATTEMPTS; attempt++) {
        const created = await this.insert(trx, request, null);
        if (created) {
          return created;
        }

        // A missing winner was deleted after the insert saw it; try again.
        const existing = await findDefaultToken(trx, request.owner);
        if (existing) {
          throw new DefaultTokenExistsError(existing.id);
        }
      }
      throw this.vanishedError();
    });
    this.announceChange(token.record.id);
    return token;
  }

  /**
   * Gives the default token a new secret in place, enables it and resets
   * its expiry, or creates it when it is missing. The replaced secret keeps
   * validating for `gracePeriodMs` (capped at the token's old expiry) when
   * the token was valid, and stops at once otherwise.
   */
  async regenerate(
    scope: CallScope,
    request: DefaultTokenRequest,
    gracePeriodMs = 0,
  ): Promise<RegenerateResult> {
    const result = await this.transactOnce(scope, request, async (trx) => {
      const locked = await this.lockOrInsert(trx, request, null);
      if ("created" in locked) {
        return { token: locked.created, created: true, graceEndsAt: null };
      }

      const record = locked.record;
      const previous =
        gracePeriodMs > 0 && isValid(record)
          ? { tokenHash: record.tokenHash, gracePeriodMs }
          : null;
      const token = await this.rotate(trx, request, record, null, previous);
      return {
        token,
        created: false,
        graceEndsAt: token.record.previousExpiresAt,
      };
    });
    this.announceChange(result.token.record.id);
    return result;
  }

  /**
   * Returns the valid default token with its secret, creating it when
   * missing and replacing it when expired or disabled. A valid token,
   * legacy format included, is returned unchanged.
   */
  async getOrProvision(
    scope: CallScope,
    request: DefaultTokenRequest,
  ): Promise<ProvisionResult> {
    // Login mostly finds a valid token: one plain read, no transaction.
    const current = await this.readForLogin(scope, request);
    if (current && isValid(current.record)) {
      // A retry gets the first call's result only while its secret is still
      // the current one; a login must never receive a rotated-out secret.
      const replay = this.findProvisioning(request, current);
      const secret = replay?.result.token.secret;
      if (secret && hashSecret(secret) === current.record.tokenHash) {
        return replay!.result;
      }
      return { token: this.reveal(current.record), provisioned: false };
    }

    const provision = async (
      trx: Knex.Transaction,
    ): Promise<ProvisionResult> => {
      const locked = await this.lockOrInsert(trx, request, "provision");
      if ("created" in locked) {
        return { token: locked.created, provisioned: true };
      }

      const record = locked.record;
      if (isValid(record)) {
        return { token: this.reveal(record), provisioned: false };
      }

      const reason = record.disabled ? "disabled" : "expired";
      const token = await this.rotate(trx, request, record, reason, null);
      return { token, provisioned: true };
    };

    // A stored result is replayed only while its token is still the valid
    // one: after a Delete, Regenerate or expiry, the retry logs in anew.
    const isCurrent = async (
      trx: Knex.Transaction,
      stored: ProvisionResult,
    ) => {
      const record = await findDefaultToken(trx, request.owner);
      const secret = stored.token.secret;
      return (
        record !== undefined &&
        isValid(record) &&
        secret !== undefined &&
        hashSecret(secret) === record.tokenHash
      );
    };
    const result = await this.transactOnce(
      scope,
      request,
      provision,
      isCurrent,
    );
    if (result.provisioned) {
      this.announceChange(result.token.record.id);
    }
    return result;
  }

  /**
   * Deletes the default token and returns it as it was. Returns undefined
   * when it is missing and `allowMissing` is set.
   *
   * @throws DefaultTokenNotFoundError when it is missing otherwise.
   */
  async delete(
    scope: CallScope,
    request: DefaultTokenRequest,
    allowMissing: boolean,
  ): Promise<TokenRecord | undefined> {
    const deleted = await this.transactOnce(scope, request, async (trx) => {
      const deleted = await deleteDefaultToken(trx, request.owner);
      if (!deleted) {
        if (allowMissing) {
          return undefined;
        }
        throw new DefaultTokenNotFoundError();
      }

      await recordAuditEvent(trx, request, deleted, "delete");
      return deleted;
    });
    if (deleted) {
      this.announceChange(deleted.id);
    }
    return deleted;
  }

  /**
   * Reads up to `limit` audit events of an owner, newest first, with ids
   * below `beforeId` when it is set.
   */
  listAuditEvents(
    scope: CallScope,
    owner: TokenOwner,
    beforeId: string | undefined,
    limit: number,
  ): Promise<AuditEventRecord[]> {
    return this.guard(scope, () =>
      findAuditEvents(this.db, owner, beforeId, limit),
    );
  }

  /**
   * Decrypts a stored secret and checks it against the row's hash.
   *
   * @throws TokenIntegrityError when the decrypted secret does not hash to
   *   the stored token_hash.
   */
  reveal(record: TokenRecord): IssuedToken {
    if (!record.sealed) {
      throw new TokenIntegrityError(
        `token ${record.id} has no stored secret to return`,
      );
    }

    const secret = this.cipher.open(record.sealed, record.id);
    if (hashSecret(secret) !== record.tokenHash) {
      throw new TokenIntegrityError(
        `the stored secret of token ${record.id} does not match its hash`,
      );
    }
    return {
      record,
      secret,
      signature: signSecret(secret, this.signingSecret),
    };
  }

  private read(
    scope: CallScope,
    owner: TokenOwner,
  ): Promise<TokenRecord | undefined> {
    // The connection's default statement_timeout ignores the call's
    // deadline, so the query carries its own timeout, capped by it.
    const timeoutMs = statementBudgetMs(scope, this.settings.transaction);
    return this.guard(scope, () =>
      findDefaultToken(this.db, owner, { timeoutMs }),
    );
  }

  /**
   * Reads the default token and, when the request has an idempotency key,
   * the key's row in the same statement, which concurrent logins share.
   */
  private readForLogin(
    scope: CallScope,
    request: DefaultTokenRequest,
  ): Promise<TokenWithKey | undefined> {
    const timeoutMs = statementBudgetMs(scope, this.settings.transaction);
    return this.guard(scope, () =>
      this.loginReads.load({
        owner: request.owner,
        keyId: idempotencyKeyOf(request),
        timeoutMs,
      }),
    );
  }

  /**
   * Returns the stored result of a provisioning call that this request
   * retries, if any, from the key row read with the token. Provisioning
   * sets updated_at, so a token unchanged for longer than the key lifetime
   * has no live result, and its key row is not used.
   */
  private findProvisioning(
    request: DefaultTokenRequest,
    current: TokenWithKey,
  ): Replay<ProvisionResult> {
    const key = idempotencyKeyOf(request);
    const ttlMs = this.idempotency.ttlSeconds * 1000;
    const changedAgoMs = Date.now() - current.record.updatedAt.getTime();
    // NOTE: a reused request_id with a different request is therefore
    // detected here only while the token is recent; the call changes
    // nothing either way.
    if (!key || changedAgoMs > ttlMs + CLOCK_SKEW_MARGIN_MS) {
      return undefined;
    }
    return this.idempotency.replayStored<ProvisionResult>(current.key, key);
  }

  /** Runs a read outside a transaction, translating database errors. */
  private async guard<T>(scope: CallScope, read: () => Promise<T>): Promise<T> {
    try {
      return await read();
    } catch (err) {
      throw translateDatabaseError(err, scope, this.settings.transaction);
    }
  }

  private transact<T>(
    scope: CallScope,
    work: (trx: Knex.Transaction) => Promise<T>,
  ): Promise<T> {
    return runTransaction(this.db, this.settings.transaction, scope, work);
  }

  /**
   * Runs `work` in one transaction that first claims the request id and
   * last stores the result under it, so a retry replays the result instead
   * of running `work` again. Without a request id, `work` simply runs.
   */
  private async transactOnce<T>(
    scope: CallScope,
    request: DefaultTokenRequest,
    work: (trx: Knex.Transaction) => Promise<T>,
    isCurrent?: StoredResultCheck<T>,
  ): Promise<T> {
    const key = idempotencyKeyOf(request);
    if (!key) {
      return this.transact(scope, work);
    }

    const result = await this.transact(scope, (trx) =>
      this.idempotency.runOnce(trx, key, scope.log, work, isCurrent),
    );
    this.idempotency.deleteExpiredInBackground(this.db, scope.log);
    return result;
  }

  private announceChange(tokenId: string): void {
    for (const listener of this.changeListeners) {
      listener(tokenId);
    }
  }

  private newSecret(tokenId: string): {
    secret: string;
    columns: SecretColumns;
  } {
    const secret = generateSecret();
    const columns = {
      tokenHash: hashSecret(secret),
      sealed: this.cipher.seal(secret, tokenId),
      masked: maskSecret(secret),
      signature: signSecret(secret, this.signingSecret),
    };
    return { secret, columns };
  }

  /** Inserts a default token with its `create` event, unless one exists. */
  private async insert(
    trx: Knex.Transaction,
    request: DefaultTokenRequest,
    reason: AuditReason | null,
  ): Promise<IssuedToken | undefined> {
    const id = randomUUID();
    const { secret, columns } = this.newSecret(id);
    const record = await insertDefaultToken(
      trx,
      request.owner,
      id,
      columns,
      this.settings.lifetimeDays,
    );
    if (!record) {
      return undefined;
    }

    await recordAuditEvent(trx, request, record, "create", reason);
    return { record, secret, signature: columns.signature };
  }

  /**
   * Locks the default token, or inserts one when there is none. The lock
   * alone cannot serialize callers when no row exists yet, so the insert
   * relies on the partial unique index: a caller that loses the race gets
   * no row back and locks the winner's row instead.
   *
   * @throws TransactionAbortedError when concurrent calls delete the row
   *   between the insert and the lock on every attempt.
   */
  private async lockOrInsert(
    trx: Knex.Transaction,
    request: DefaultTokenRequest,
    reason: AuditReason | null,
  ): Promise<{ record: TokenRecord } | { created: IssuedToken }> {
    for (let attempt = 1; attempt <= MAX_INSERT_ATTEMPTS; attempt++) {
      const existing = await findDefaultToken(trx, request.owner, {
        forUpdate: true,
      });
      if (existing) {
        return { record: existing };
      }

      const created = await this.insert(trx, request, reason);
      if (created) {
        return { created };
      }
      // The insert met a committed row that a concurrent Delete removed
      // before this call could lock it, so the lock found nothing: retry.
    }
    throw this.vanishedError();
  }

  /**
   * Replaces a locked token's secret and records a `regenerate` event,
   * keeping the replaced secret valid for a grace period with `previous`.
   */
  private async rotate(
    trx: Knex.Transaction,
    request: DefaultTokenRequest,
    record: TokenRecord,
    reason: AuditReason | null,
    previous: PreviousSecret | null,
  ): Promise<IssuedToken> {
    const { secret, columns } = this.newSecret(record.id);
    const updated = await replaceSecret(
      trx,
      record.id,
      columns,
      this.settings.lifetimeDays,
      previous,
    );

    await recordAuditEvent(
      trx,
      request,
      updated,
      "regenerate",
      reason,
      previous?.gracePeriodMs ?? null,
    );
    return { record: updated, secret, signature: columns.signature };
  }

  private vanishedError(): TransactionAbortedError {
    return new TransactionAbortedError(
      "a concurrent call deleted the default token during this call; " +
        "retry the call",
    );
  }
}
