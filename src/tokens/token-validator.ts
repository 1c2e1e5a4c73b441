import type { Knex } from "knex";
import { describeDatabaseError } from "../db/errors";
import {
  type CallScope,
  translateDatabaseError,
  type TransactionSettings,
} from "../db/transaction";
import type { Logger } from "../logger";
import {
  findTokenByHash,
  type TokenKind,
  type TokenMatch,
  touchLastUsed,
} from "./repository";
import { hashSecret, isCurrentFormat, isLegacyFormat } from "./secret";
import { ValidationCache } from "./validation-cache";

/** Outcome of checking a presented secret. */
export type ValidationResult =
  "valid" | "not_found" | "expired" | "disabled" | "malformed";

/** The token facts a validation reports; never the secret or its hash. */
export interface ValidatedToken {
  id: string;
  userId: string;
  orgId: string;
  kind: TokenKind;
  label: string;
  expiresAt: Date | null;
}

/** Result of checking a secret, with the token it belongs to. */
export interface TokenValidation {
  result: ValidationResult;
  /** Set for valid, expired and disabled results. */
  token?: ValidatedToken;
  /** True when the secret is the token's previous secret. */
  previous: boolean;
  /** When the previous secret stops validating; null for a current one. */
  graceEndsAt: Date | null;
}

/** Settings of token validation. */
export interface ValidatorSettings {
  /** Milliseconds a cached result is used; 0 turns the cache off. */
  cacheTtlMs: number;
  cacheMaxEntries: number;
  /** Limits used to translate database errors into status codes. */
  transaction: TransactionSettings;
}

/** Minimum time between two last_used_at updates of one token. */
export const LAST_USED_INTERVAL_MS = 60_000;

/** Maximum length of a token; longer strings are malformed. */
const MAX_SECRET_LENGTH = 47;

function isWellFormed(secret: string): boolean {
  return (
    secret.length <= MAX_SECRET_LENGTH &&
    (isCurrentFormat(secret) || isLegacyFormat(secret))
  );
}

function describeMatch(match: TokenMatch | undefined): TokenValidation {
  if (!match) {
    return { result: "not_found", previous: false, graceEndsAt: null };
  }

  const { record } = match;
  let result: ValidationResult = "valid";
  if (record.disabled) {
    result = "disabled";
  } else if (record.expired || (match.previous && match.previousExpired)) {
    result = "expired";
  }
  return {
    result,
    token: {
      id: record.id,
      userId: record.userId,
      orgId: record.orgId,
      kind: record.kind,
      label: record.label,
      expiresAt: record.expiresAt,
    },
    previous: match.previous,
    graceEndsAt: match.previous ? record.previousExpiresAt : null,
  };
}

/**
 * Checks presented secrets against the stored hashes. Validation is a
 * read: the last_used_at update runs in the background, at most once a
 * minute per token, and its failure does not change the result.
 */
export class TokenValidator {
  private readonly cache: ValidationCache;
  private readonly touches = new Map<string, Promise<void>>();

  constructor(
    private readonly db: Knex,
    private readonly settings: ValidatorSettings,
    private readonly log: Logger,
  ) {
    this.cache = new ValidationCache(
      settings.cacheTtlMs,
      settings.cacheMaxEntries,
    );
  }

  /** Checks a secret; a malformed one is rejected before any query. */
  async validate(scope: CallScope, secret: string): Promise<TokenValidation> {
    if (!isWellFormed(secret)) {
      return { result: "malformed", previous: false, graceEndsAt: null };
    }

    const tokenHash = hashSecret(secret);
    const cached = this.cache.get(tokenHash);
    if (cached) {
      return cached;
    }

    const generation = this.cache.startLookup();
    let match: TokenMatch | undefined;
    try {
      match = await findTokenByHash(this.db, tokenHash);
    } catch (err) {
      throw translateDatabaseError(err, scope, this.settings.transaction);
    }

    const validation = describeMatch(match);
    this.cache.set(tokenHash, validation, generation);
    if (match && validation.result === "valid") {
      this.recordUse(match);
    }
    return validation;
  }

  /** Drops cached results of a token after this process changed it. */
  invalidate(tokenId: string): void {
    this.cache.invalidate(tokenId);
  }

  /** Waits for the background last_used_at updates started so far. */
  async settle(): Promise<void> {
    await Promise.all(this.touches.values());
  }

  /**
   * Starts the last_used_at update of a token unless the row read shows a
   * recent use or an update is already running. The UPDATE's own condition
   * keeps concurrent callers and other replicas to one write a minute.
   */
  private recordUse(match: TokenMatch): void {
    const { id, lastUsedAt } = match.record;
    const recent =
      lastUsedAt !== null &&
      Date.now() - lastUsedAt.getTime() < LAST_USED_INTERVAL_MS;
    if (recent || this.touches.has(id)) {
      return;
    }

    const touch = touchLastUsed(this.db, id, LAST_USED_INTERVAL_MS).then(
      (updated) => {
        if (updated) {
          this.log.debug({ tokenId: id }, "updated last_used_at");
        }
      },
      (err: unknown) => {
        this.log.warn(
          { tokenId: id, err: describeDatabaseError(err) },
          "failed to update last_used_at; the next use will retry",
        );
      },
    );
    this.touches.set(id, touch);
    void touch.finally(() => this.touches.delete(id));
  }
}
