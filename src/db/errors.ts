/** SQLSTATE codes and the PostgreSQL conditions they name. */
export const SqlState = {
  uniqueViolation: "23505",
  serializationFailure: "40001",
  deadlockDetected: "40P01",
  lockNotAvailable: "55P03",
  queryCanceled: "57014",
  adminShutdown: "57P01",
  crashShutdown: "57P02",
  cannotConnectNow: "57P03",
  invalidCatalogName: "3D000",
} as const;

/** Network error codes from Node.js that mean the server is unreachable. */
const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "EPIPE",
  "ETIMEDOUT",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
]);

const CONNECTION_LOST_MESSAGES = [
  "Connection terminated",
  "Client has encountered a connection error",
  "Timeout acquiring a connection",
  "connection is closed",
];

interface ErrorWithCode {
  code?: unknown;
  errors?: unknown;
  message?: unknown;
  name?: unknown;
}

/** Returns the SQLSTATE or Node.js error code of a database error, if any. */
export function errorCode(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null) {
    return undefined;
  }

  const withCode = err as ErrorWithCode;
  if (typeof withCode.code === "string") {
    return withCode.code;
  }
  // Node.js reports a failed connect to every address of a host as an
  // AggregateError with the per-address errors inside.
  if (Array.isArray(withCode.errors) && withCode.errors.length > 0) {
    return errorCode(withCode.errors[0]);
  }
  return undefined;
}

/** Returns whether a retry of the whole transaction may succeed. */
export function isRetryable(err: unknown): boolean {
  const code = errorCode(err);
  return (
    code === SqlState.serializationFailure || code === SqlState.deadlockDetected
  );
}

function isKnexTimeout(err: unknown, messageStart: string): boolean {
  const { name, message } = (err ?? {}) as ErrorWithCode;
  return (
    name === "KnexTimeoutError" &&
    typeof message === "string" &&
    message.startsWith(messageStart)
  );
}

/** Checks whether every pool connection stayed busy for the acquire timeout. */
export function isPoolTimeout(err: unknown): boolean {
  return isKnexTimeout(err, "Knex: Timeout acquiring a connection");
}

/** Checks whether knex cancelled a query that ran past its `timeout()`. */
export function isQueryTimeout(err: unknown): boolean {
  return isKnexTimeout(err, "Defined query timeout");
}

/** Returns whether the error means the database or its connection is gone. */
export function isConnectionError(err: unknown): boolean {
  const code = errorCode(err);
  if (code !== undefined) {
    if (NETWORK_CODES.has(code) || code.startsWith("08")) {
      return true;
    }
    if (
      code === SqlState.adminShutdown ||
      code === SqlState.crashShutdown ||
      code === SqlState.cannotConnectNow
    ) {
      return true;
    }
  }

  const { message } = (err ?? {}) as ErrorWithCode;
  return (
    typeof message === "string" &&
    CONNECTION_LOST_MESSAGES.some((fragment) => message.includes(fragment))
  );
}

/**
 * Describes a database error for logs without SQL, bindings or the
 * `detail` field, because PostgreSQL puts row values (token hashes, for
 * example) in the detail of a unique violation.
 */
export function describeDatabaseError(err: unknown): Record<string, unknown> {
  if (typeof err !== "object" || err === null) {
    return { message: String(err) };
  }

  const record = err as Record<string, unknown>;
  return {
    name: record.name,
    code: errorCode(err),
    constraint: record.constraint,
    table: record.table,
    routine: record.routine,
    // knex prefixes the server's message with the SQL text; keep the part
    // after the last " - ", which is PostgreSQL's own message.
    message:
      typeof record.message === "string"
        ? record.message.split(" - ").pop()
        : undefined,
  };
}
