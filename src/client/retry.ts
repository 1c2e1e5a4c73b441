import { setTimeout as sleep } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import type { Logger } from "../logger";
import { TokenServiceError } from "./errors";

/**
 * How the client retries a call that ended with UNAVAILABLE. The fields and
 * defaults follow the retryPolicy of gRPC's client retry design (gRFC A6).
 */
export interface RetryPolicy {
  /** Attempts in all, the first one included; 1 turns retries off. */
  maxAttempts: number;
  /** Upper bound of the first delay, in milliseconds. */
  initialBackoffMs: number;
  /** Upper bound of any one delay, in milliseconds. */
  maxBackoffMs: number;
  /** Factor by which the bound grows after each retry. */
  backoffMultiplier: number;
}

/** Four attempts, with delays bounded by 100 ms, 200 ms and 400 ms. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 4,
  initialBackoffMs: 100,
  maxBackoffMs: 1000,
  backoffMultiplier: 2,
};

/**
 * Computes the delay before retry number `retry` (1 for the first retry):
 * a random time from 0 up to min(initial * multiplier^(retry - 1), max).
 * This "full jitter" spreads the retries of many clients that failed at
 * the same moment.
 */
export function backoffDelayMs(
  retry: number,
  policy: RetryPolicy,
  random: () => number = Math.random,
): number {
  const bound = Math.min(
    policy.initialBackoffMs * policy.backoffMultiplier ** (retry - 1),
    policy.maxBackoffMs,
  );
  return Math.floor(random() * bound);
}

/** Checks a policy once, when the client is created. */
export function validateRetryPolicy(policy: RetryPolicy): void {
  const problems: string[] = [];
  if (!Number.isInteger(policy.maxAttempts) || policy.maxAttempts < 1) {
    problems.push("maxAttempts must be a whole number of at least 1");
  }
  if (!(policy.initialBackoffMs >= 0)) {
    problems.push("initialBackoffMs must be 0 or more");
  }
  if (!(policy.maxBackoffMs >= policy.initialBackoffMs)) {
    problems.push("maxBackoffMs must be at least initialBackoffMs");
  }
  if (!(policy.backoffMultiplier >= 1)) {
    problems.push("backoffMultiplier must be 1 or more");
  }
  if (problems.length > 0) {
    throw new RangeError(`invalid retry policy: ${problems.join("; ")}`);
  }
}

/** What one call's retry loop needs besides the attempt itself. */
export interface RetryScope {
  method: string;
  policy: RetryPolicy;
  /** Epoch milliseconds after which no attempt starts. */
  deadline: number;
  log?: Logger;
}

/**
 * Runs `attempt` until it succeeds, fails with a code other than
 * UNAVAILABLE, or the policy's attempts run out. A retry that would start
 * at or after the deadline is not made, and the last UNAVAILABLE error is
 * thrown instead.
 *
 * UNAVAILABLE usually means the change was not made, but a connection lost
 * during the commit can report it after the commit. A retry that carries
 * the same non-empty `audit.request_id` then gets the first call's
 * response back from the service instead of making a second change.
 */
export async function retryUnavailable<T>(
  scope: RetryScope,
  attempt: () => Promise<T>,
): Promise<T> {
  for (let attemptNumber = 1; ; attemptNumber++) {
    try {
      return await attempt();
    } catch (err) {
      const retryable =
        err instanceof TokenServiceError && err.code === status.UNAVAILABLE;
      if (!retryable || attemptNumber >= scope.policy.maxAttempts) {
        throw err;
      }

      const delayMs = backoffDelayMs(attemptNumber, scope.policy);
      if (Date.now() + delayMs >= scope.deadline) {
        throw err;
      }
      scope.log?.warn(
        { method: scope.method, attempt: attemptNumber, delayMs },
        "call failed with UNAVAILABLE; retrying",
      );
      await sleep(delayMs);
    }
  }
}
