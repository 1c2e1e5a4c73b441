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

interface Pending<L, R> {
  lookup: L;
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
 * made, so it sees every change committed before then.
 */
export class ReadBatcher<L, R> {
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
   * @throws whatever the statement that read it threw; every lookup of a
   *   failed statement gets the same error.
   */
  load(lookup: L): Promise<R | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ lookup, resolve, reject });
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
      const batch = this.queue.splice(0, this.settings.maxBatch);
      this.inFlight++;
      void this.run(batch).finally(() => {
        this.inFlight--;
        this.scheduleDispatch();
      });
    }
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
