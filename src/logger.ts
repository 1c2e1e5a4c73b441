import pino, { type Logger } from "pino";

export type { Logger };

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
    timestamp: pino.stdTimeFunctions.isoTime,
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
  // Asynchronous writes: lines logged while a write is in flight go out
  // together in the next one, so a busy server makes one system call for
  // many call lines. pino flushes the buffer synchronously on exit.
  return pino(
    options,
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}
