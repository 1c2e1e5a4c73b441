import {
  setImmediate as nextTurn,
  setTimeout as sleep,
} from "node:timers/promises";
import { expect } from "chai";
import {
  batchTimeoutMs,
  LookupExpiredError,
  ReadBatcher,
} from "../src/db/read-batcher";

interface Lookup {
  n: number;
  timeoutMs: number;
}

function lookupOf(n: number, timeoutMs = 60_000): Lookup {
  return { n, timeoutMs };
}

/** Returns the result of lookup n in these tests: none for odd n. */
function resultOf(n: number): number | undefined {
  return n % 2 === 0 ? n * 10 : undefined;
}

/**
 * A batch read whose statements finish only when the test releases them,
 * recording the lookup numbers of each.
 */
class ControlledRead {
  readonly batches: number[][] = [];
  private readonly pending: (() => void)[] = [];
  running = 0;
  maxRunning = 0;

  readonly read = async (lookups: Lookup[]) => {
    this.batches.push(lookups.map((lookup) => lookup.n));
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    await new Promise<void>((resolve) => this.pending.push(resolve));
    this.running--;
    return lookups.map((lookup) => resultOf(lookup.n));
  };

  /** Lets every statement started so far finish. */
  async releaseAll(): Promise<void> {
    while (this.pending.length > 0) {
      this.pending.shift()!();
      await nextTurn();
    }
  }
}

/** Creates a batcher of up to 8 lookups a statement over a ControlledRead. */
function controlledBatcher(maxInFlight: number) {
  const reads = new ControlledRead();
  const batcher = new ReadBatcher(reads.read, { maxBatch: 8, maxInFlight });
  return { reads, batcher };
}

async function settleAll(
  reads: ControlledRead,
  loads: Promise<unknown>[],
): Promise<PromiseSettledResult<unknown>[]> {
  const settled = Promise.allSettled(loads);
  for (let turn = 0; turn < 20; turn++) {
    await nextTurn();
    await reads.releaseAll();
  }
  return settled;
}

describe("ReadBatcher", () => {
  it("resolves each lookup with its own result", async () => {
    const { reads, batcher } = controlledBatcher(2);

    const numbers = Array.from({ length: 30 }, (_, index) => index);
    const settled = await settleAll(
      reads,
      numbers.map((n) => batcher.load(lookupOf(n))),
    );

    const results = settled.map((outcome) =>
      outcome.status === "fulfilled" ? outcome.value : "rejected",
    );
    expect(results).to.deep.equal(numbers.map(resultOf));
    expect(reads.batches.flat().sort((a, b) => a - b)).to.deep.equal(numbers);
  });

  it("keeps batches and statements in limits", async () => {
    const { reads, batcher } = controlledBatcher(2);

    await settleAll(
      reads,
      Array.from({ length: 30 }, (_, n) => batcher.load(lookupOf(n))),
    );

    expect(reads.maxRunning).to.equal(2);
    for (const batch of reads.batches) {
      expect(batch.length).to.be.at.most(8);
    }
    expect(reads.batches.length).to.be.below(30);
  });

  it("sends a lone lookup without waiting for more", async () => {
    const { reads, batcher } = controlledBatcher(2);

    const result = batcher.load(lookupOf(4));
    await nextTurn();

    expect(reads.batches).to.deep.equal([[4]]);
    await reads.releaseAll();
    expect(await result).to.equal(40);
  });

  it("gathers lookups that wait for a statement", async () => {
    const { reads, batcher } = controlledBatcher(1);

    const first = batcher.load(lookupOf(0));
    await nextTurn();
    const waiting = [2, 4, 6].map((n) => batcher.load(lookupOf(n)));
    await nextTurn();
    expect(reads.batches).to.deep.equal([[0]]);

    await reads.releaseAll();
    await nextTurn();
    expect(reads.batches).to.deep.equal([[0], [2, 4, 6]]);
    await reads.releaseAll();
    expect(await first).to.equal(0);
    expect(await Promise.all(waiting)).to.deep.equal([20, 40, 60]);
  });

  it("drops a lookup that waited past its timeout", async () => {
    const { reads, batcher } = controlledBatcher(1);

    const first = batcher.load(lookupOf(0));
    await nextTurn();
    // The handler is attached at once, because the rejection comes before
    // the awaits below.
    const expired = batcher.load(lookupOf(2, 5)).then(
      () => undefined,
      (err: unknown) => err,
    );
    const patient = batcher.load(lookupOf(4));
    await sleep(20);
    await reads.releaseAll();
    await nextTurn();

    expect(reads.batches).to.deep.equal([[0], [4]]);
    const outcome = await expired;
    expect(outcome).to.be.instanceOf(LookupExpiredError);
    expect((outcome as Error).message).to.match(
      /^the read waited \d+ ms for a database statement, over its 5 ms timeout$/,
    );
    await reads.releaseAll();
    expect(await first).to.equal(0);
    expect(await patient).to.equal(40);
  });

  it("rejects only the lookups of a failed statement", async () => {
    const failure = new Error("connection lost");
    let calls = 0;
    const batcher = new ReadBatcher(
      async (lookups: Lookup[]) => {
        calls++;
        if (calls === 1) {
          throw failure;
        }
        return lookups.map((lookup) => lookup.n);
      },
      { maxBatch: 2, maxInFlight: 1 },
    );

    const settled = await Promise.allSettled(
      [1, 2, 3].map((n) => batcher.load(lookupOf(n))),
    );

    expect(settled[0]).to.deep.equal({ status: "rejected", reason: failure });
    expect(settled[1]).to.deep.equal({ status: "rejected", reason: failure });
    expect(settled[2]).to.deep.equal({ status: "fulfilled", value: 3 });
  });

  it("rejects a batch whose result count is wrong", async () => {
    const batcher = new ReadBatcher(async () => [1], {
      maxBatch: 4,
      maxInFlight: 1,
    });

    const settled = await Promise.allSettled([
      batcher.load(lookupOf(1)),
      batcher.load(lookupOf(2)),
    ]);

    for (const outcome of settled) {
      expect(outcome.status).to.equal("rejected");
      const reason = (outcome as PromiseRejectedResult).reason as Error;
      expect(reason.message).to.equal(
        "a batched read returned 1 results for 2 lookups",
      );
    }
  });

  it("times a batch by its longest budget", () => {
    expect(
      batchTimeoutMs([{ timeoutMs: 50 }, { timeoutMs: 900 }, { timeoutMs: 5 }]),
    ).to.equal(900);
  });
});
