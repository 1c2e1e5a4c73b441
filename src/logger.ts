import pino, { type Logger } from "pino";

export type { Logger };

/** The part of pino's destination stream that BatchedLineStream uses. */
interface LineSink {
  write(chunk: string): boolean;
  flushSync(): void;
}

/** Maximum time a logged line waits in a BatchedLineStream, in ms. */
export const LOG_BATCH_DELAY_MS = 10;

/** Characters of pending lines that start a write at once. */
const LOG_BATCH_MAX_CHARS = 16 * 1024;

/**
 * Gathers logged lines for up to LOG_BATCH_DELAY_MS, or until 16 KiB are
 * pending, and hands them to `sink` as one chunk. Each asynchronous write
 * goes through libuv's thread pool at a cost per write, so one write for
 * many call lines costs far less than one for each.
 */
export class BatchedLineStream {
  private pending: string[] = [];
  private pendingChars = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly sink: LineSink) {}

  write(line: string): boolean {
    this.pending.push(line);
    this.pendingChars += line.length;
    if (this.pendingChars >= LOG_BATCH_MAX_CHARS) {
      this.release();
    } else if (!this.timer) {
      this.timer = setTimeout(() => this.release(), LOG_BATCH_DELAY_MS);
    }
    return true;
  }

  /** Writes every pending line before returning. */
  flushSync(): void {
    this.release();
    this.sink.flushSync();
  }

  private release(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.pending.length > 0) {
      const chunk = this.pending.join("");
      this.pending = [];
      this.pendingChars = 0;
      this.sink.write(chunk);
    }
  }
}

let lastTimeMs = Number.NaN;
let lastTimeField = "";

/**
 * pino's ISO time field, made once a millisecond: a busy server writes
 * several lines in each, and formatting the date is a notable part of a
 * line's cost.
 */
function isoTime(): string {
  const now = Date.now();
  if (now !== lastTimeMs) {
    lastTimeMs = now;
    lastTimeField = `,"time":"${new Date(now).toISOString()}"`;
  }
  return lastTimeField;
}

/**
 * Creates the service's JSON logger: one line an event on standard output.
 * Redaction is a second guard: code never passes a secret, hash or
 * signature to the logger in the first place.
 */
export function createLogger(
  level: string,
  destination?: pino.DestinationStream,
): Logger {
  const options: pino.LoggerOptions = {
    level,
    base: { service: "token-service" },
    timestamp: isoTime,
    redact: {
      paths: [
        "secret",
        "*.secret",
        "token_hash",
        "*.token_hash",
        "signature",
        "*.signature",
      ],
      censor: "[redacted]",
    },
  };
  if (destination) {
    return pino(options, destination);
  }

  // Asynchronous writes, so a slow reader of standard output never stalls
  // the server. On exit this handler writes the pending lines at once.
  const stream = new BatchedLineStream(
    pino.destination({ dest: 1, sync: false }),
  );
  process.once("exit", () => stream.flushSync());
  return pino(options, stream);
}
