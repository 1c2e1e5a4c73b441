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
  return destination ? pino(options, destination) : pino(options);
}
