import { randomUUID } from "node:crypto";
import {
  type handleUnaryCall,
  type ServerUnaryCall,
  status,
} from "@grpc/grpc-js";
import { describeDatabaseError, errorCode } from "../db/errors";
import type { CallScope } from "../db/transaction";
import type { Logger } from "../logger";
import {
  type FieldViolation,
  InvalidArgumentError,
  RequestTooLargeError,
} from "../tokens/errors";
import { MalformedRequest } from "./decoding";
import { type CallStatus, statusOf, toServiceError } from "./status";

/** Metadata key in which the calling service names itself. */
export const CLIENT_SERVICE_KEY = "x-client-service";

const CLIENT_SERVICE_PATTERN = /^[A-Za-z0-9._:/@-]{1,128}$/;

/** Maximum length of an id value copied into a log line, in characters. */
const MAX_LOGGED_ID_LENGTH = 256;

/** Call facts a handler receives besides its request message. */
export interface CallContext extends CallScope {
  /** RPC name, such as `Regenerate`. */
  rpc: string;
  /** The calling service, or empty when it did not name itself. */
  clientService: string;
  /** Violation of the `x-client-service` value, if it was rejected. */
  clientServiceViolation?: FieldViolation;
}

/**
 * Code run inside every handler, after the call context is built and before
 * the handler's own work. A test seam: the fault suite throws from it to
 * check that unexpected errors end as INTERNAL. main.ts never sets it.
 */
export interface CallHooks {
  beforeHandler?: (
    context: CallContext,
    request: unknown,
  ) => void | Promise<void>;
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

/**
 * Names the calling service: the common name of its verified client
 * certificate under mutual TLS, which the caller cannot forge, or else the
 * optional `x-client-service` metadata value. A malformed value comes back
 * as a violation, which the handler reports with the request's own.
 */
function readClientService(call: ServerUnaryCall<unknown, unknown>): {
  clientService: string;
  violation?: FieldViolation;
} {
  const certificate = call.getAuthContext().sslPeerCertificate;
  const commonName = certificate?.subject?.CN;
  if (typeof commonName === "string" && commonName !== "") {
    return { clientService: commonName };
  }

  const values = call.metadata.get(CLIENT_SERVICE_KEY);
  const value = values.length > 0 ? String(values[0]) : "";
  if (
    values.length > 1 ||
    (value !== "" && !CLIENT_SERVICE_PATTERN.test(value))
  ) {
    const violation = {
      field: CLIENT_SERVICE_KEY,
      description:
        `metadata ${CLIENT_SERVICE_KEY} ${JSON.stringify(value.slice(0, 64))} ` +
        `is invalid: send one value of 1 to 128 letters, digits or . _ : / @ -`,
    };
    return { clientService: "", violation };
  }
  return { clientService: value };
}

/**
 * @throws RequestTooLargeError or InvalidArgumentError when the request
 *   bytes were rejected by the deserializer.
 */
function throwIfMalformed(request: unknown, rpc: string): void {
  if (!(request instanceof MalformedRequest)) {
    return;
  }
  if (request.oversized) {
    throw new RequestTooLargeError(`${request.reason}; send a smaller request`);
  }
  throw new InvalidArgumentError([
    {
      field: "request",
      description:
        `request is not a valid ${rpc}Request: ${request.reason}; send ` +
        `a message encoded from token/v1/token_service.proto`,
    },
  ]);
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
 * Wraps an async handler for grpc-js, which catches only synchronous throws.
 * Every rejection becomes a mapped status, and an unknown error becomes
 * INTERNAL with an error id that is also logged. Each call writes one log
 * line with its status code and duration.
 */
export function unary<Req extends object, Res>(
  rpc: string,
  log: Logger,
  handle: UnaryHandler<Req, Res>,
  hooks: CallHooks = {},
): handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const startedAt = performance.now();
    const controller = new AbortController();
    const abort = () => controller.abort();
    call.on("cancelled", abort);

    const request: LoggedRequest = call.request;
    const callLog = log.child({
      rpc,
      userId: truncate(request.userId),
      orgId: truncate(request.orgId),
      requestId: truncate(request.audit?.requestId),
    });

    let clientService: string | undefined;
    const run = async (): Promise<Res> => {
      throwIfMalformed(request, rpc);
      const caller = readClientService(call);
      clientService = caller.clientService;
      const context: CallContext = {
        rpc,
        clientService,
        clientServiceViolation: caller.violation,
        deadline: readDeadline(call),
        signal: controller.signal,
        log: callLog,
      };
      await hooks.beforeHandler?.(context, request);
      return handle(call.request, context);
    };

    const finish = (code: status, invalidFields?: string[]) => {
      // grpc-js 1.10 and later emits "cancelled" at the end of every call,
      // completed ones too. Aborting then would build an unused AbortError,
      // stack trace included, for each call.
      call.removeListener("cancelled", abort);
      const durationMs = Math.round((performance.now() - startedAt) * 10) / 10;
      callLog.info(
        {
          code: status[code],
          durationMs,
          clientService: truncate(clientService),
          invalidFields,
          peer: call.getPeer(),
        },
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
        const invalidFields =
          err instanceof InvalidArgumentError
            ? err.violations.map((violation) => violation.field)
            : undefined;
        finish(callStatus.code, invalidFields);
        callback(toServiceError(callStatus));
      },
    );
  };
}

/** Binds the logger and hooks of every handler of one service. */
export function bindUnary(log: Logger, hooks: CallHooks = {}) {
  return <Req extends object, Res>(
    rpc: string,
    handle: UnaryHandler<Req, Res>,
  ): handleUnaryCall<Req, Res> => unary(rpc, log, handle, hooks);
}
