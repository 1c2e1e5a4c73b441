import { setImmediate as nextTurn } from "node:timers/promises";
import { expect } from "chai";
import { batchTimeoutMs, ReadBatcher } from "../src/db/read-batcher";

/**
 * A batch read whose statements finish only when the test releases them,
 * recording the lookups of each.
 */
class ControlledRead {
  readonly batches: number[][] = [];
  private readonly pending: (() => void)[] = [];
  running = 0;
  maxRunning = 0;

  readonly read = async (lookups: number[]) => {
    this.batches.push(lookups);
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    await new Promise<void>((resolve) => this.pending.push(resolve));
    this.running--;
    return lookups.map((lookup) =>
      lookup % 2 === 0 ? lookup * 10 : undefined,
    );
  };

  /** Lets every statement started so far finish. */
  async releaseAll(): Promise<void> {
    while (this.pending.length > 0) {
      this.pending.shift()!();
      await nextTurn();
    }
  }
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
  it("answers each lookup with its own result", async () => {
    const reads = new ControlledRead();
    const batcher = new ReadBatcher(reads.read, {
      maxBatch: 8,
      maxInFlight: 2,
    });

    const lookups = Array.from({ length: 30 }, (_, index) => index);
    const settled = await settleAll(
      reads,
      lookups.map((lookup) => batcher.load(lookup)),
    );

    const results = settled.map((outcome) =>
      outcome.status === "fulfilled" ? outcome.value : "rejected",
    );
    expect(results).to.deep.equal(
      lookups.map((lookup) => (lookup % 2 === 0 ? lookup * 10 : undefined)),
    );
    expect(reads.batches.flat().sort((a, b) => a - b)).to.deep.equal(lookups);
  });

  it("keeps batches and statements in limits", async () => {
    const reads = new ControlledRead();
    const batcher = new ReadBatcher(reads.read, {
      maxBatch: 8,
      maxInFlight: 2,
    });

    await settleAll(
      reads,
      Array.from({ length: 30 }, (_, index) => batcher.load(index)),
    );

    expect(reads.maxRunning).to.equal(2);
    for (const batch of reads.batches) {
      expect(batch.length).to.be.at.most(8);
    }
    expect(reads.batches.length).to.be.below(30);
  });

  it("sends a lone lookup without waiting for more", async () => {
    const reads = new ControlledRead();
    const batcher = new ReadBatcher(reads.read, {
      maxBatch: 8,
      maxInFlight: 2,
    });

    const result = batcher.load(4);
    await nextTurn();

    expect(reads.batches).to.deep.equal([[4]]);
    await reads.releaseAll();
    expect(await result).to.equal(40);
  });

  it("gathers lookups that wait for a statement", async () => {
    const reads = new ControlledRead();
    const batcher = new ReadBatcher(reads.read, {
      maxBatch: 8,
      maxInFlight: 1,
    });

    const first = batcher.load(0);
    await nextTurn();
    const waiting = [2, 4, 6].map((lookup) => batcher.load(lookup));
    await nextTurn();
    expect(reads.batches).to.deep.equal([[0]]);

    await reads.releaseAll();
    await nextTurn();
    expect(reads.batches).to.deep.equal([[0], [2, 4, 6]]);
    await reads.releaseAll();
    expect(await first).to.equal(0);
    expect(await Promise.all(waiting)).to.deep.equal([20, 40, 60]);
  });

  it("rejects only the lookups of a failed statement", async () => {
    const failure = new Error("connection lost");
    let calls = 0;
    const batcher = new ReadBatcher(
      async (lookups: number[]) => {
        calls++;
        if (calls === 1) {
          throw failure;
        }
        return lookups;
      },
      { maxBatch: 2, maxInFlight: 1 },
    );

    const settled = await Promise.allSettled(
      [1, 2, 3].map((n) => batcher.load(n)),
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
      batcher.load(1),
      batcher.load(2),
    ]);

    for (const outcome of settled) {
      expect(outcome.status).to.equal("rejected");
      const reason = (outcome as PromiseRejectedResult).reason as Error;
      expect(reason.message).to.equal(
        "a batched read returned 1 results for 2 lookups",
      );
    }
  });

  it("times a batch by its most patient caller", () => {
    expect(
      batchTimeoutMs([{ timeoutMs: 50 }, { timeoutMs: 900 }, { timeoutMs: 5 }]),
    ).to.equal(900);
  });
});
