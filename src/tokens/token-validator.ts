import type { Knex } from "knex";
import { describeDatabaseError } from "../db/errors";
import {
  batchTimeoutMs,
  HOT_READ_BATCHING,
  ReadBatcher,
  type TimedLookup,
} from "../db/read-batcher";
import {
  type CallScope,
  statementBudgetMs,
  translateDatabaseError,
  type TransactionSettings,
} from "../db/transaction";
import type { Logger } from "../logger";
import {
  findTokensByHashes,
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

/** Milliseconds a token use waits for the batched last_used_at update. */
const LAST_USED_FLUSH_DELAY_MS = 1_000;

/** Maximum token ids of one last_used_at update; more start one at once. */
const LAST_USED_BATCH_MAX = 1_000;

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
 * read: last_used_at is written in the background by a batched UPDATE
 * within about a second of the use, at most once a minute per token, and
 * its failure does not change the result.
 */
export class TokenValidator {
  private readonly cache: ValidationCache;
  /** Lookups by hash of concurrent cache misses, read together. */
  private readonly hashReads: ReadBatcher<
    TimedLookup & { tokenHash: string },
    TokenMatch
  >;
  /** Ids of used tokens waiting for the next last_used_at update. */
  private readonly queuedUses = new Set<string>();
  /** Ids in a last_used_at update that has not finished yet. */
  private readonly writingUses = new Set<string>();
  private readonly flushes = new Set<Promise<void>>();
  private flushTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly db: Knex,
    private readonly settings: ValidatorSettings,
    private readonly log: Logger,
  ) {
    this.cache = new ValidationCache(
      settings.cacheTtlMs,
      settings.cacheMaxEntries,
    );
    this.hashReads = new ReadBatcher(
      (lookups) =>
        findTokensByHashes(
          db,
          lookups.map((lookup) => lookup.tokenHash),
          batchTimeoutMs(lookups),
        ),
      HOT_READ_BATCHING,
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
      const timeoutMs = statementBudgetMs(scope, this.settings.transaction);
      match = await this.hashReads.load({ tokenHash, timeoutMs });
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

  /**
   * Writes the queued last_used_at updates now and waits for every update
   * started so far, so that a stopping service loses none of them.
   */
  async settle(): Promise<void> {
    this.flush();
    await Promise.all(this.flushes);
  }

  /**
   * Queues the last_used_at update of a token unless the row read shows a
   * recent use or the token is already queued or being written. The
   * UPDATE's own condition keeps concurrent callers and other replicas to
   * one write a minute.
   */
  private recordUse(match: TokenMatch): void {
    const { id, lastUsedAt } = match.record;
    const recent =
      lastUsedAt !== null &&
      Date.now() - lastUsedAt.getTime() < LAST_USED_INTERVAL_MS;
    if (recent || this.queuedUses.has(id) || this.writingUses.has(id)) {
      return;
    }

    this.queuedUses.add(id);
    if (this.queuedUses.size >= LAST_USED_BATCH_MAX) {
      this.flush();
    } else if (!this.flushTimer) {
      this.flushTimer = setTimeout(
        () => this.flush(),
        LAST_USED_FLUSH_DELAY_MS,
      );
      this.flushTimer.unref();
    }
  }

  /** Starts one UPDATE of every queued token without waiting for it. */
  private flush(): void {
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    if (this.queuedUses.size === 0) {
      return;
    }

    const ids = [...this.queuedUses];
    this.queuedUses.clear();
    for (const id of ids) {
      this.writingUses.add(id);
    }

    const write = touchLastUsed(this.db, ids, LAST_USED_INTERVAL_MS).then(
      (updated) => {
        for (const id of updated) {
          this.log.debug({ tokenId: id }, "updated last_used_at");
        }
      },
      (err: unknown) => {
        this.log.warn(
          { count: ids.length, err: describeDatabaseError(err) },
          "failed to update last_used_at of the tokens used; " +
            "their next use will retry",
        );
      },
    );
    this.flushes.add(write);
    void write.finally(() => {
      this.flushes.delete(write);
      for (const id of ids) {
        this.writingUses.delete(id);
      }
    });
  }
}
