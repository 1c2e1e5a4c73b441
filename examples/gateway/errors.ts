import { status } from "@grpc/grpc-js";
import {
  AbortedError,
  AlreadyExistsError,
  DeadlineExceededError,
  InvalidArgumentError,
  NotFoundError,
  TokenServiceError,
  UnavailableError,
} from "../../src";
import { HttpError } from "./http-io";

/** Seconds a client should wait before retrying after a 503. */
const RETRY_AFTER_SECONDS = 1;

/** The request header each service field comes from, for 400 responses. */
const FIELD_HEADERS: Record<string, string> = {
  user_id: "X-User-Id",
  org_id: "X-Org-Id",
  "audit.request_id": "X-Request-Id",
  "audit.user_agent": "User-Agent",
};

/** An HTTP error response: status, headers and JSON body. */
export interface ErrorResponse {
  status: number;
  headers: Record<string, string>;
  body: { error: Record<string, unknown> };
}

function response(
  httpStatus: number,
  code: string,
  message: string,
  extra: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): ErrorResponse {
  return {
    status: httpStatus,
    headers,
    body: { error: { code, message, ...extra } },
  };
}

/** Maps a typed TokenService error to the HTTP response it means. */
function serviceErrorResponse(
  err: TokenServiceError,
): ErrorResponse | undefined {
  if (err instanceof InvalidArgumentError) {
    const fieldViolations = err.fieldViolations.map((violation) => ({
      ...violation,
      ...(FIELD_HEADERS[violation.field]
        ? { header: FIELD_HEADERS[violation.field] }
        : {}),
    }));
    return response(400, "INVALID_ARGUMENT", err.details, { fieldViolations });
  }
  if (err instanceof NotFoundError) {
    return response(404, "NOT_FOUND", err.details);
  }
  if (err instanceof AlreadyExistsError) {
    return response(409, "ALREADY_EXISTS", err.details, {
      tokenId: err.tokenId,
    });
  }
  if (err instanceof AbortedError) {
    return response(409, "ABORTED", err.details);
  }
  if (err instanceof UnavailableError) {
    return response(
      503,
      "UNAVAILABLE",
      "the token service is unavailable; retry later",
      {},
      { "Retry-After": String(RETRY_AFTER_SECONDS) },
    );
  }
  if (err instanceof DeadlineExceededError) {
    return response(
      504,
      "DEADLINE_EXCEEDED",
      "the token service did not respond in time; retry later",
    );
  }
  if (err.code === status.UNIMPLEMENTED) {
    return response(
      501,
      "UNIMPLEMENTED",
      `the token service does not implement ${err.method} yet`,
    );
  }
  return undefined;
}

/**
 * Maps any error of a request to its HTTP response. Errors of no known kind
 * become a 500 that names only `errorId`, under which the caller logs the
 * cause.
 */
export function errorResponse(err: unknown, errorId: string): ErrorResponse {
  if (err instanceof HttpError) {
    return response(err.status, err.code, err.message, {}, err.headers);
  }
  if (err instanceof TokenServiceError) {
    const mapped = serviceErrorResponse(err);
    if (mapped) {
      return mapped;
    }
  }
  return response(
    500,
    "INTERNAL",
    `internal error; the gateway logged the cause under error id ${errorId}`,
  );
}
