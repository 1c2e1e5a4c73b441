import { randomUUID } from "node:crypto";
import {
  type handleUnaryCall,
  type Metadata,
  type ServerUnaryCall,
  status,
} from "@grpc/grpc-js";
import { describeDatabaseError, errorCode } from "../db/errors";
import type { CallScope } from "../db/transaction";
import type { Logger } from "../logger";
import { InvalidArgumentError } from "../tokens/errors";
import { type CallStatus, statusOf, toServiceError } from "./status";

/** Metadata key in which the calling service names itself. */
export const CLIENT_SERVICE_KEY = "x-client-service";

const CLIENT_SERVICE_PATTERN = /^[A-Za-z0-9._:/@-]{1,128}$/;

/** Longest id value copied into a log line, in characters. */
const MAX_LOGGED_ID_LENGTH = 256;

/** What a handler knows about the call besides its request message. */
export interface CallContext extends CallScope {
  /** RPC name, such as `Regenerate`. */
  rpc: string;
  /** The calling service, or empty when it did not name itself. */
  clientService: string;
}

/** Request fields copied into the call's log line. */
interface LoggedRequest {
  userId?: unknown;
  orgId?: unknown;
  audit?: { requestId?: unknown };
}

type UnaryHandler<Req, Res> = (
  request: Req,
  context: CallContext,
) => Promise<Res>;

function truncate(value: unknown): string | undefined {
  return typeof value === "string"
    ? value.slice(0, MAX_LOGGED_ID_LENGTH)
    : undefined;
}

function readDeadline(
  call: ServerUnaryCall<unknown, unknown>,
): number | undefined {
  const deadline = call.getDeadline();
  const epochMs = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(epochMs) ? epochMs : undefined;
}

function readClientService(metadata: Metadata): string {
  const values = metadata.get(CLIENT_SERVICE_KEY);
  if (values.length === 0) {
    return "";
  }

  const value = String(values[0]);
  if (values.length > 1 || !CLIENT_SERVICE_PATTERN.test(value)) {
    throw new InvalidArgumentError([
      {
        field: CLIENT_SERVICE_KEY,
        description:
          `metadata ${CLIENT_SERVICE_KEY} must be one name of 1 to 128 ` +
          `letters, digits or . _ : / @ -`,
      },
    ]);
  }
  return value;
}

function describeError(err: unknown): Record<string, unknown> {
  if (errorCode(err) !== undefined) {
    return describeDatabaseError(err);
  }
  if (err instanceof Error) {
    return { name: err.name, message: err.message, stack: err.stack };
  }
  return { message: String(err) };
}

/**
 * Wraps an async handler for grpc-js, which catches only synchronous throws:
 * every rejection becomes a mapped status, unknown errors become INTERNAL
 * with an error id that is also logged, and each call writes one log line
 * with its status code and duration.
 */
export function unary<Req extends LoggedRequest, Res>(
  rpc: string,
  log: Logger,
  handle: UnaryHandler<Req, Res>,
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const startedAt = performance.now();
    const controller = new AbortController();
    const abort = () => controller.abort();
    call.on("cancelled", abort);

    const request = call.request;
    const callLog = log.child({
      rpc,
      userId: truncate(request.userId),
      orgId: truncate(request.orgId),
      requestId: truncate(request.audit?.requestId),
    });

    const run = async (): Promise<Res> => {
      const context: CallContext = {
        rpc,
        clientService: readClientService(call.metadata),
        deadline: readDeadline(call),
        signal: controller.signal,
        log: callLog,
      };
      return handle(request, context);
    };

    const finish = (code: status) => {
      // grpc-js 1.10 and later emits "cancelled" at the end of every call,
      // completed ones too. Aborting then would build an unused AbortError,
      // stack trace included, for each call.
      call.removeListener("cancelled", abort);
      const durationMs = Math.round((performance.now() - startedAt) * 10) / 10;
      callLog.info(
        { code: status[code], durationMs, peer: call.getPeer() },
        "call finished",
      );
    };

    run().then(
      (response) => {
        finish(status.OK);
        callback(null, response);
      },
      (err: unknown) => {
        let callStatus: CallStatus | undefined = statusOf(err);
        if (!callStatus) {
          const errorId = randomUUID();
          callLog.error(
            { errorId, err: describeError(err) },
            "call failed with an unexpected error",
          );
          callStatus = {
            code: status.INTERNAL,
            message:
              `internal error (error id ${errorId}); the service logged ` +
              `the cause under that id`,
            details: [],
          };
        }
        finish(callStatus.code);
        callback(toServiceError(callStatus));
      },
    );
  };
}
