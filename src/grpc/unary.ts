import { randomUUID } from "node:crypto";
import {
  type handleUnaryCall,
  type sendUnaryData,
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

/**
 * Picks fields of a successful response for the call's log line, such as
 * ValidateToken's result. The line is not redacted, so it must pick no
 * secret, hash or signature.
 */
type ResponseSummary<Res> = (response: Res) => Record<string, unknown>;

/** Picks the id of the response's token, if any, for the call line. */
export function logTokenId(response: {
  token?: { id: string };
}): Record<string, unknown> {
  return { tokenId: response.token?.id };
}

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

/** The settings shared by every call of one RPC. */
interface UnaryMethod<Req, Res> {
  rpc: string;
  /** The service's logger, which redacts. */
  log: Logger;
  /** Writes the call lines; see `unary`. */
  callLines: Logger;
  handle: UnaryHandler<Req, Res>;
  hooks: CallHooks;
  summarize?: ResponseSummary<Res>;
}

/**
 * One call: its context for the handler, and its end. The abort signal and
 * the logger with the call's ids are made on first use, so a ValidateToken
 * cache hit, which needs neither, does not pay for them.
 */
class UnaryCall<Req extends object, Res> implements CallContext {
  readonly rpc: string;
  clientService = "";
  clientServiceViolation?: FieldViolation;
  deadline?: number;

  private readonly startedAt = performance.now();
  private readonly userId?: string;
  private readonly orgId?: string;
  private readonly requestId?: string;
  private controller: AbortController | undefined;
  private abort: (() => void) | undefined;
  private callLog: Logger | undefined;

  constructor(
    private readonly method: UnaryMethod<Req, Res>,
    private readonly call: ServerUnaryCall<Req, Res>,
    private readonly callback: sendUnaryData<Res>,
  ) {
    this.rpc = method.rpc;
    const request: LoggedRequest = call.request;
    this.userId = truncate(request.userId);
    this.orgId = truncate(request.orgId);
    this.requestId = truncate(request.audit?.requestId);
  }

  /** Aborted once the call is cancelled, even if made after that. */
  get signal(): AbortSignal {
    if (!this.controller) {
      const controller = new AbortController();
      this.controller = controller;
      if (this.call.cancelled) {
        controller.abort();
      } else {
        this.abort = () => controller.abort();
        this.call.on("cancelled", this.abort);
      }
    }
    return this.controller.signal;
  }

  /** The service's logger with the call's ids bound. */
  get log(): Logger {
    this.callLog ??= this.method.log.child({
      rpc: this.rpc,
      userId: this.userId,
      orgId: this.orgId,
      requestId: this.requestId,
    });
    return this.callLog;
  }

  /** Runs the handler and ends the call with its response or status. */
  async run(): Promise<void> {
    let response: Res;
    try {
      const request = this.call.request;
      throwIfMalformed(request, this.rpc);
      const caller = readClientService(this.call);
      this.clientService = caller.clientService;
      this.clientServiceViolation = caller.violation;
      this.deadline = readDeadline(this.call);
      await this.method.hooks.beforeHandler?.(this, request);
      response = await this.method.handle(request, this);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.finish(status.OK, this.method.summarize?.(response));
    this.callback(null, response);
  }

  private fail(err: unknown): void {
    let callStatus: CallStatus | undefined = statusOf(err);
    if (!callStatus) {
      const errorId = randomUUID();
      this.log.error(
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
    this.finish(callStatus.code, { invalidFields });
    this.callback(toServiceError(callStatus));
  }

  /** Stops following the call's cancellation and writes its line. */
  private finish(code: status, fields?: Record<string, unknown>): void {
    // grpc-js 1.10 and later emits "cancelled" at the end of every call,
    // completed ones too. Aborting then would build an unused AbortError,
    // stack trace included.
    if (this.abort) {
      this.call.removeListener("cancelled", this.abort);
    }
    const durationMs =
      Math.round((performance.now() - this.startedAt) * 10) / 10;
    // A call that ended before its handler did got its status from grpc-js,
    // and the client never sees the handler's. The line contains both.
    let sentCode = code;
    if (this.call.cancelled) {
      const deadline = readDeadline(this.call);
      sentCode =
        deadline !== undefined && deadline <= Date.now()
          ? status.DEADLINE_EXCEEDED
          : status.CANCELLED;
    }
    this.method.callLines.info(
      {
        userId: this.userId,
        orgId: this.orgId,
        requestId: this.requestId,
        code: status[sentCode],
        handlerCode: sentCode === code ? undefined : status[code],
        durationMs,
        clientService: truncate(this.clientService),
        peer: this.call.getPeer(),
        ...fields,
      },
      "call finished",
    );
  }
}

/**
 * Wraps an async handler for grpc-js, which catches only synchronous throws.
 * Every rejection becomes a mapped status, and an unknown error becomes
 * INTERNAL with an error id that is also logged. Each call writes one log
 * line with its status code and duration, and the fields `summarize`
 * picks from a successful response.
 */
export function unary<Req extends object, Res>(
  rpc: string,
  log: Logger,
  handle: UnaryHandler<Req, Res>,
  hooks: CallHooks = {},
  summarize?: ResponseSummary<Res>,
): handleUnaryCall<Req, Res> {
  const method: UnaryMethod<Req, Res> = {
    rpc,
    log,
    // The call line's keys are the fixed ones in UnaryCall.finish, none of
    // them a redacted path, so its logger skips the redaction pass, a
    // large part of the line's CPU. Every other line is redacted.
    callLines: log.child({ rpc }, { redact: { paths: [] } }),
    handle,
    hooks,
    summarize,
  };
  return (call, callback) => {
    void new UnaryCall(method, call, callback).run();
  };
}

/** Binds the logger and hooks of every handler of one service. */
export function bindUnary(log: Logger, hooks: CallHooks = {}) {
  return <Req extends object, Res>(
    rpc: string,
    handle: UnaryHandler<Req, Res>,
    summarize?: ResponseSummary<Res>,
  ): handleUnaryCall<Req, Res> => unary(rpc, log, handle, hooks, summarize);
}
