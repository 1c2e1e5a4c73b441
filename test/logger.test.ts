import { execFileSync } from "node:child_process";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { expect } from "chai";
import { BatchedLineStream, LOG_BATCH_DELAY_MS } from "../src/logger";

/** A sink that keeps the chunks it is given. */
class RecordingSink {
  readonly chunks: string[] = [];
  flushes = 0;

  write(chunk: string): boolean {
    this.chunks.push(chunk);
    return true;
  }

  flushSync(): void {
    this.flushes++;
  }
}

const LOGGER_MODULE = path.resolve(__dirname, "..", "src", "logger.ts");

describe("BatchedLineStream", () => {
  it("writes a burst as one chunk", async () => {
    const sink = new RecordingSink();
    const stream = new BatchedLineStream(sink);

    stream.write("a\n");
    stream.write("b\n");
    stream.write("c\n");
    expect(sink.chunks, "before the delay").to.deep.equal([]);

    await sleep(LOG_BATCH_DELAY_MS * 5);
    expect(sink.chunks).to.deep.equal(["a\nb\nc\n"]);
  });

  it("writes 16 KiB at once", () => {
    const sink = new RecordingSink();
    const stream = new BatchedLineStream(sink);
    const line = "x".repeat(1023) + "\n";

    for (let i = 0; i < 16; i++) {
      stream.write(line);
    }

    expect(sink.chunks).to.deep.equal([line.repeat(16)]);
    stream.flushSync();
  });

  it("writes pending lines on flushSync", () => {
    const sink = new RecordingSink();
    const stream = new BatchedLineStream(sink);

    stream.write("last words\n");
    stream.flushSync();

    expect(sink.chunks).to.deep.equal(["last words\n"]);
    expect(sink.flushes).to.equal(1);
  });

  it("keeps lines on immediate exit", () => {
    // The default logger batches its lines. A failed start-up calls
    // process.exit right after logging, and the lines must still be written.
    const script =
      `const { createLogger } = require(${JSON.stringify(LOGGER_MODULE)});` +
      `const log = createLogger("info");` +
      `for (let i = 0; i < 3; i++) log.info({ i }, "line");` +
      `process.exit(0);`;
    const output = execFileSync(
      process.execPath,
      ["--require", "tsx/cjs", "-e", script],
      { encoding: "utf8" },
    );

    const lines = output
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { i: number; msg: string });
    expect(lines.map((line) => line.i)).to.deep.equal([0, 1, 2]);
  });
});
