/** Limits of one ReadBatcher. */
export interface ReadBatcherSettings {
  /** Maximum number of lookups one statement reads. */
  maxBatch: number;
  /** Maximum number of statements running at once. Other lookups wait. */
  maxInFlight: number;
}

/**
 * Limits of the login and validation reads. Two statements in flight leave
 * the rest of the pool to transactions.
 */
// NOTE: tuned on one 2-vCPU machine with 64 callers (docs/benchmarks.md);
// a larger machine may want more statements in flight.
export const HOT_READ_BATCHING: ReadBatcherSettings = {
  maxBatch: 64,
  maxInFlight: 2,
};

/**
 * Reads the results of `lookups` in one statement, one result (or
 * undefined for none) per lookup, in the same order.
 */
export type BatchRead<L, R> = (lookups: L[]) => Promise<(R | undefined)[]>;

/** A lookup that carries its caller's statement budget. */
export interface TimedLookup {
  timeoutMs: number;
}

/**
 * Returns the statement timeout of a batch: the budget of its most
 * patient caller, so that no caller's lookup is cut shorter than its own.
 */
export function batchTimeoutMs(lookups: readonly TimedLookup[]): number {
  return Math.max(...lookups.map((lookup) => lookup.timeoutMs));
}

/**
 * A lookup that waited for a statement longer than its own timeout, so it
 * was never sent.
 */
export class LookupExpiredError extends Error {
  override name = "LookupExpiredError";
}

interface Pending<L, R> {
  lookup: L;
  /** Time the lookup was queued, in epoch milliseconds. */
  queuedAt: number;
  resolve: (result: R | undefined) => void;
  reject: (err: unknown) => void;
}

/**
 * Gathers concurrent single-row reads into shared statements. While fewer
 * than `maxInFlight` statements run, a lookup goes out after the current
 * event-loop turn, together with the lookups that arrived in that turn.
 * Otherwise it waits for a running statement to finish and goes out with
 * every lookup that waited. So an idle server adds no wait, and a busy one
 * sends fewer, larger statements.
 *
 * Every lookup is read by a statement that starts after the lookup was
 * made, so its result includes every change committed before then.
 */
export class ReadBatcher<L extends TimedLookup, R> {
  private readonly queue: Pending<L, R>[] = [];
  private inFlight = 0;
  private dispatchScheduled = false;

  constructor(
    private readonly read: BatchRead<L, R>,
    private readonly settings: ReadBatcherSettings,
  ) {}

  /**
   * Reads one lookup's result with the next statement.
   *
   * @throws whatever the statement that read it threw. Every lookup of a
   *   failed statement gets the same error.
   * @throws LookupExpiredError when the lookup waited longer than its
   *   timeoutMs for a statement, which then leaves it out.
   */
  load(lookup: L): Promise<R | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ lookup, queuedAt: Date.now(), resolve, reject });
      this.scheduleDispatch();
    });
  }

  private scheduleDispatch(): void {
    if (
      this.dispatchScheduled ||
      this.queue.length === 0 ||
      this.inFlight >= this.settings.maxInFlight
    ) {
      return;
    }
    this.dispatchScheduled = true;
    setImmediate(() => {
      this.dispatchScheduled = false;
      this.dispatch();
    });
  }

  private dispatch(): void {
    while (this.queue.length > 0 && this.inFlight < this.settings.maxInFlight) {
      const batch = this.takeBatch();
      if (batch.length === 0) {
        continue;
      }
      this.inFlight++;
      void this.run(batch).finally(() => {
        this.inFlight--;
        this.scheduleDispatch();
      });
    }
  }

  /**
   * Takes up to maxBatch lookups from the queue and rejects those that
   * waited past their timeout. Their callers have given up or soon will,
   * so reading their rows would only slow the statement.
   */
  private takeBatch(): Pending<L, R>[] {
    const now = Date.now();
    const taken = this.queue.splice(0, this.settings.maxBatch);
    const batch: Pending<L, R>[] = [];
    for (const pending of taken) {
      const waitedMs = now - pending.queuedAt;
      if (waitedMs < pending.lookup.timeoutMs) {
        batch.push(pending);
        continue;
      }
      pending.reject(
        new LookupExpiredError(
          `the read waited ${waitedMs} ms for a database statement, over ` +
            `its ${pending.lookup.timeoutMs} ms timeout`,
        ),
      );
    }
    return batch;
  }

  private async run(batch: Pending<L, R>[]): Promise<void> {
    let results: (R | undefined)[];
    try {
      results = await this.read(batch.map((pending) => pending.lookup));
    } catch (err) {
      for (const pending of batch) {
        pending.reject(err);
      }
      return;
    }

    if (results.length !== batch.length) {
      const err = new Error(
        `a batched read returned ${results.length} results for ` +
          `${batch.length} lookups`,
      );
      for (const pending of batch) {
        pending.reject(err);
      }
      return;
    }
    batch.forEach((pending, index) => pending.resolve(results[index]));
  }
}
