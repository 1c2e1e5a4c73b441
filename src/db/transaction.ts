import { setTimeout as sleep } from "node:timers/promises";
import type { Knex } from "knex";
import type { Logger } from "../logger";
import {
  DatabaseUnavailableError,
  DeadlineExceededError,
  TokenServiceError,
  TransactionAbortedError,
} from "../tokens/errors";
import { cancelOnAbort } from "./cancel";
import { type PreparedStatement, runPrepared } from "./prepared";
import { LookupExpiredError } from "./read-batcher";
import {
  describeDatabaseError,
  errorCode,
  isConnectionError,
  isPoolTimeout,
  isQueryTimeout,
  isRetryable,
  SqlState,
} from "./errors";

/** Limits every mutating transaction runs under. */
export interface TransactionSettings {
  lockTimeoutMs: number;
  statementTimeoutMs: number;
  /** Retries after a serialization failure or deadlock. */
  maxRetries: number;
}

/** The part of a call that bounds its database work. */
export interface CallScope {
  /** Epoch milliseconds after which the caller no longer waits. */
  deadline?: number;
  /** Aborted when the client cancels the call or its deadline passes. */
  signal?: AbortSignal;
  log: Logger;
}

/**
 * Sets the transaction's lock and statement timeouts, and reads the
 * backend's pid for cancelling its statement when the call goes away.
 */
const SET_TRANSACTION_LIMITS: PreparedStatement = {
  name: "token_service_set_transaction_limits",
  sql:
    "select set_config('lock_timeout', ?, true), " +
    "set_config('statement_timeout', ?, true), pg_backend_pid() as pid",
};

/** Base delay between retries; each retry waits a random 1x to 2x of it. */
const RETRY_BASE_DELAY_MS = 10;

function remainingMs(scope: CallScope): number {
  return scope.deadline === undefined
    ? Number.POSITIVE_INFINITY
    : scope.deadline - Date.now();
}

function isCancelled(scope: CallScope): boolean {
  return scope.signal?.aborted === true || remainingMs(scope) <= 0;
}

function throwIfCancelled(scope: CallScope): void {
  if (isCancelled(scope)) {
    throw new DeadlineExceededError(
      "the call's deadline passed or the client cancelled it; nothing was " +
        "committed",
    );
  }
}

/**
 * Turns a database error into the service error it means for the caller:
 * DEADLINE_EXCEEDED, ABORTED or UNAVAILABLE. Returns any other error
 * unchanged.
 */
export function translateDatabaseError(
  err: unknown,
  scope: CallScope,
  settings: TransactionSettings,
): unknown {
  if (err instanceof TokenServiceError) {
    return err;
  }
  if (isCancelled(scope)) {
    return new DeadlineExceededError(
      "the call's deadline passed during its database work; nothing was " +
        "committed",
    );
  }

  const code = errorCode(err);
  if (code === SqlState.lockNotAvailable) {
    return new TransactionAbortedError(
      `timed out after ${settings.lockTimeoutMs} ms waiting for a row lock ` +
        `held by another call; retry the call`,
    );
  }
  if (err instanceof LookupExpiredError) {
    return new TransactionAbortedError(`${err.message}; retry the call`);
  }
  if (code === SqlState.queryCanceled || isQueryTimeout(err)) {
    return new TransactionAbortedError(
      `a database statement timed out after ${settings.statementTimeoutMs} ` +
        `ms; retry the call`,
    );
  }
  if (isRetryable(err)) {
    return new TransactionAbortedError(
      `the change conflicted with concurrent calls ${settings.maxRetries + 1} ` +
        `times; retry the call`,
    );
  }
  if (isPoolTimeout(err)) {
    return new DatabaseUnavailableError(
      "every database connection stayed busy for the acquire timeout; " +
        "retry the call with backoff",
    );
  }
  if (isConnectionError(err)) {
    return new DatabaseUnavailableError(
      "the database is unreachable; retry the call with backoff",
    );
  }
  return err;
}

/**
 * Returns the milliseconds a statement outside a transaction may run: the
 * statement timeout, capped by the time left before the call's deadline.
 */
export function statementBudgetMs(
  scope: CallScope,
  settings: TransactionSettings,
): number {
  const remaining = Math.max(1, Math.floor(remainingMs(scope)));
  return Math.min(settings.statementTimeoutMs, remaining);
}

/**
 * Runs `work` in one transaction with lock_timeout and statement_timeout set
 * for it, each capped by the time left before the call's deadline. Retries
 * serialization failures and deadlocks up to `maxRetries` times with
 * jittered backoff. When the client cancels the call, or the server
 * cancels it on a forced shutdown, the running statement is cancelled on
 * the server. A call that was cancelled or whose deadline passed is rolled
 * back instead of committed.
 *
 * @throws TokenServiceError subclasses for the conditions the caller maps to
 *   status codes; any other error unchanged.
 */
export async function runTransaction<T>(
  db: Knex,
  settings: TransactionSettings,
  scope: CallScope,
  work: (trx: Knex.Transaction) => Promise<T>,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    throwIfCancelled(scope);
    const budget = Math.max(1, Math.floor(remainingMs(scope)));
    const lockTimeout = Math.min(settings.lockTimeoutMs, budget);
    const statementTimeout = Math.min(settings.statementTimeoutMs, budget);

    try {
      return await db.transaction(async (trx) => {
        const rows = await runPrepared<{ pid: number }>(
          trx,
          SET_TRANSACTION_LIMITS,
          [`${lockTimeout}ms`, `${statementTimeout}ms`],
        );
        const stopCancelling = cancelOnAbort(
          db,
          scope.signal,
          rows[0].pid,
          scope.log,
        );
        let result: T;
        try {
          result = await work(trx);
        } finally {
          await stopCancelling();
        }

        // The last check before COMMIT: a caller that has gone gets nothing
        // committed on its behalf.
        throwIfCancelled(scope);
        return result;
      });
    } catch (err) {
      if (isRetryable(err) && attempt < settings.maxRetries) {
        const delayMs =
          RETRY_BASE_DELAY_MS * 2 ** attempt * (1 + Math.random());
        scope.log.warn(
          { attempt: attempt + 1, delayMs, err: describeDatabaseError(err) },
          "retrying transaction after a conflict",
        );
        await sleep(delayMs);
        continue;
      }

      const translated = translateDatabaseError(err, scope, settings);
      if (translated !== err) {
        scope.log.warn(
          { attempts: attempt + 1, err: describeDatabaseError(err) },
          "transaction failed",
        );
      }
      throw translated;
    }
  }
}
