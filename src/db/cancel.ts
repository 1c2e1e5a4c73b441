import type { Knex } from "knex";
import type { Logger } from "../logger";
import { describeDatabaseError } from "./errors";

/**
 * The method of knex's pg client that sends pg_cancel_backend over a new
 * connection outside the pool. knex 3 uses it for `timeout(ms, { cancel:
 * true })`, and its typings do not declare the argument.
 */
interface CancellingClient {
  cancelQuery(connection: { processID: number }): Promise<unknown>;
}

/**
 * Cancels the statement running on backend `processId` once `signal`
 * aborts. Returns a function that stops watching and waits for a cancel
 * already sent. Call it before the transaction ends, so that the cancel
 * cannot reach the backend after it has gone back to the pool and serves
 * another call. Only PostgreSQL through pg is cancelled. The embedded
 * PGlite runs one statement at a time, so nothing there waits for a lock.
 */
export function cancelOnAbort(
  db: Knex,
  signal: AbortSignal | undefined,
  processId: number,
  log: Logger,
): () => Promise<void> {
  if (!signal || db.client.config.client !== "pg") {
    return async () => undefined;
  }

  let sent: Promise<void> | undefined;
  const cancel = () => {
    const client = db.client as unknown as CancellingClient;
    sent = client.cancelQuery({ processID: processId }).then(
      () => log.info({ processId }, "cancelled the statement of a gone call"),
      (err: unknown) =>
        log.warn(
          { processId, err: describeDatabaseError(err) },
          "failed to cancel the statement of a gone call",
        ),
    );
  };
  if (signal.aborted) {
    cancel();
  } else {
    signal.addEventListener("abort", cancel, { once: true });
  }

  return async () => {
    signal.removeEventListener("abort", cancel);
    await sent;
  };
}
