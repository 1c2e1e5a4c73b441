import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import {
  type CallScope,
  runTransaction,
  statementBudgetMs,
  translateDatabaseError,
  type TransactionSettings,
} from "../db/transaction";
import { type AuditReason, type AuditSource, recordAuditEvent } from "./audit";
import type { SecretCipher } from "./cipher";
import {
  DefaultTokenExistsError,
  DefaultTokenNotFoundError,
  TransactionAbortedError,
} from "./errors";
import {
  deleteDefaultToken,
  findDefaultToken,
  insertDefaultToken,
  replaceSecret,
  type SecretColumns,
  type TokenOwner,
  type TokenRecord,
} from "./repository";
import { generateSecret, hashSecret, maskSecret, signSecret } from "./secret";

/** Settings of the default-token operations. */
export interface DefaultTokenSettings {
  /** Days from creation or regeneration to expiry. */
  lifetimeDays: number;
  transaction: TransactionSettings;
}

/** A request for one owner's default token, with its audit facts. */
export interface DefaultTokenRequest extends AuditSource {
  owner: TokenOwner;
}

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

/** A stored secret that no longer matches its hash: a corrupted row. */
export class TokenIntegrityError extends Error {
  override name = "TokenIntegrityError";
}

/** Whether a token authenticates its holder now. */
export function isValid(record: TokenRecord): boolean {
  return !record.disabled && !record.expired;
}

/**
 * The four default-token operations. Each change runs in one transaction
 * together with its audit event; user keys (kind `user`) are never matched.
 */
export class DefaultTokens {
  constructor(
    private readonly db: Knex,
    private readonly cipher: SecretCipher,
    private readonly signingSecret: Buffer,
    private readonly settings: DefaultTokenSettings,
  ) {}

  /**
   * Creates the default token.
   *
   * @throws DefaultTokenExistsError with the existing token's id.
   */
  async createDefault(
    scope: CallScope,
    request: DefaultTokenRequest,
  ): Promise<IssuedToken> {
    return this.transact(scope, async (trx) => {
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
  }

  /**
   * Gives the default token a new secret in place, enables it and resets
   * its expiry, or creates it when it is missing.
   */
  async regenerate(
    scope: CallScope,
    request: DefaultTokenRequest,
  ): Promise<{ token: IssuedToken; created: boolean }> {
    return this.transact(scope, async (trx) => {
      const locked = await this.lockOrInsert(trx, request, null);
      if ("created" in locked) {
        return { token: locked.created, created: true };
      }

      const token = await this.rotate(trx, request, locked.record, null);
      return { token, created: false };
    });
  }

  /**
   * Returns the valid default token with its secret, creating it when
   * missing and replacing it when expired or disabled. A valid token,
   * legacy format included, is returned unchanged.
   */
  async getOrProvision(
    scope: CallScope,
    request: DefaultTokenRequest,
  ): Promise<{ token: IssuedToken; provisioned: boolean }> {
    // Login mostly finds a valid token: one plain read, no transaction.
    const current = await this.read(scope, request.owner);
    if (current && isValid(current)) {
      return { token: this.reveal(current), provisioned: false };
    }

    return this.transact(scope, async (trx) => {
      const locked = await this.lockOrInsert(trx, request, "provision");
      if ("created" in locked) {
        return { token: locked.created, provisioned: true };
      }

      const record = locked.record;
      if (isValid(record)) {
        return { token: this.reveal(record), provisioned: false };
      }

      const reason = record.disabled ? "disabled" : "expired";
      const token = await this.rotate(trx, request, record, reason);
      return { token, provisioned: true };
    });
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
    return this.transact(scope, async (trx) => {
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

  private async read(
    scope: CallScope,
    owner: TokenOwner,
  ): Promise<TokenRecord | undefined> {
    // The connection's default statement_timeout ignores the call's
    // deadline, so the query carries its own timeout, capped by it.
    const timeoutMs = statementBudgetMs(scope, this.settings.transaction);
    try {
      return await findDefaultToken(this.db, owner, { timeoutMs });
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

  /** Replaces a locked token's secret and records a `regenerate` event. */
  private async rotate(
    trx: Knex.Transaction,
    request: DefaultTokenRequest,
    record: TokenRecord,
    reason: AuditReason | null,
  ): Promise<IssuedToken> {
    const { secret, columns } = this.newSecret(record.id);
    const updated = await replaceSecret(
      trx,
      record.id,
      columns,
      this.settings.lifetimeDays,
    );

    await recordAuditEvent(trx, request, updated, "regenerate", reason);
    return { record: updated, secret, signature: columns.signature };
  }

  private vanishedError(): TransactionAbortedError {
    return new TransactionAbortedError(
      "a concurrent call deleted the default token during this call; " +
        "retry the call",
    );
  }
}
