import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import {
  BadRequest,
  ErrorInfo,
  ResourceInfo,
} from "../generated/google/rpc/error_details";
import { Status } from "../generated/google/rpc/status";

/** Trailer key that carries a google.rpc.Status with the rich details. */
export const STATUS_DETAILS_KEY = "grpc-status-details-bin";

/** One invalid request field, from the google.rpc.BadRequest detail. */
export interface FieldViolation {
  /** Path of the field in the request, such as `audit.client_ip`. */
  field: string;
  /** Description of the problem and its fix, in the service's words. */
  description: string;
}

/**
 * A call to TokenService that ended with a status other than OK. The
 * subclasses name the codes a caller usually handles, and every other code
 * arrives as this class itself.
 */
export class TokenServiceError extends Error {
  override name = "TokenServiceError";

  constructor(
    /** The gRPC status code. */
    readonly code: status,
    /** The RPC that failed, such as `Regenerate`. */
    readonly method: string,
    /** The status message from the service, without the code prefix. */
    readonly details: string,
    /** The response trailers, including the raw status details. */
    readonly metadata: Metadata = new Metadata(),
  ) {
    super(`${method} failed with ${status[code]}: ${details}`);
  }
}

/**
 * Creates the base class of the errors for one status code. Its
 * constructor takes what every typed error needs: the RPC name, the status
 * message and the trailers.
 */
function errorWithCode(code: status) {
  return class extends TokenServiceError {
    constructor(method: string, details: string, metadata?: Metadata) {
      super(code, method, details, metadata);
    }
  };
}

/** INVALID_ARGUMENT: the request was malformed and nothing was changed. */
export class InvalidArgumentError extends errorWithCode(
  status.INVALID_ARGUMENT,
) {
  override name = "InvalidArgumentError";

  /** Every invalid field the service named, in its order. */
  readonly fieldViolations: FieldViolation[];

  constructor(method: string, details: string, metadata?: Metadata) {
    super(method, details, metadata);
    const badRequest = findDetail(
      metadata,
      "google.rpc.BadRequest",
      BadRequest,
    );
    this.fieldViolations = (badRequest?.fieldViolations ?? []).map((v) => ({
      field: v.field,
      description: v.description,
    }));
  }
}

/** ALREADY_EXISTS: CreateDefault found a default token in place. */
export class AlreadyExistsError extends errorWithCode(status.ALREADY_EXISTS) {
  override name = "AlreadyExistsError";

  /** Id of the existing token, or undefined when the service sent none. */
  readonly tokenId: string | undefined;

  constructor(method: string, details: string, metadata?: Metadata) {
    super(method, details, metadata);
    const resource = findDetail(
      metadata,
      "google.rpc.ResourceInfo",
      ResourceInfo,
    );
    const info = findDetail(metadata, "google.rpc.ErrorInfo", ErrorInfo);
    this.tokenId =
      resource?.resourceName || info?.metadata.token_id || undefined;
  }
}

/** NOT_FOUND: there is no default token for the user and organization. */
export class NotFoundError extends errorWithCode(status.NOT_FOUND) {
  override name = "NotFoundError";
}

/**
 * ABORTED: a lock wait timed out or a conflict outlasted the service's own
 * retries. Nothing was committed and the caller may retry later.
 */
export class AbortedError extends errorWithCode(status.ABORTED) {
  override name = "AbortedError";
}

/**
 * UNAVAILABLE: the service or its database could not be reached, after the
 * client's own retries.
 */
export class UnavailableError extends errorWithCode(status.UNAVAILABLE) {
  override name = "UnavailableError";
}

/**
 * DEADLINE_EXCEEDED: the call's deadline passed. The service commits
 * nothing for a call whose deadline passed before the commit.
 */
export class DeadlineExceededError extends errorWithCode(
  status.DEADLINE_EXCEEDED,
) {
  override name = "DeadlineExceededError";
}

/**
 * INTERNAL: the service failed in an unexpected way. Its message carries an
 * error id that the service logged with the cause.
 */
export class InternalError extends errorWithCode(status.INTERNAL) {
  override name = "InternalError";
}

type ErrorConstructor = new (
  method: string,
  details: string,
  metadata?: Metadata,
) => TokenServiceError;

const ERROR_TYPES: Partial<Record<status, ErrorConstructor>> = {
  [status.INVALID_ARGUMENT]: InvalidArgumentError,
  [status.ALREADY_EXISTS]: AlreadyExistsError,
  [status.NOT_FOUND]: NotFoundError,
  [status.ABORTED]: AbortedError,
  [status.UNAVAILABLE]: UnavailableError,
  [status.DEADLINE_EXCEEDED]: DeadlineExceededError,
  [status.INTERNAL]: InternalError,
};

/**
 * Finds one detail of the google.rpc.Status in the trailers by its type name
 * and decodes it. Returns undefined when the trailer or the detail is
 * missing or does not decode, so that a malformed detail never hides the
 * status code itself.
 */
function findDetail<T>(
  metadata: Metadata | undefined,
  typeName: string,
  codec: { decode(input: Uint8Array): T },
): T | undefined {
  const [raw] = metadata?.get(STATUS_DETAILS_KEY) ?? [];
  if (!(raw instanceof Buffer)) {
    return undefined;
  }

  try {
    const detail = Status.decode(raw).details.find((any) =>
      any.typeUrl.endsWith(`/${typeName}`),
    );
    return detail ? codec.decode(detail.value) : undefined;
  } catch {
    return undefined;
  }
}

/** Turns the error grpc-js reports for a call into a typed error. */
export function toTokenServiceError(
  err: ServiceError,
  method: string,
): TokenServiceError {
  const ErrorType = ERROR_TYPES[err.code];
  if (ErrorType) {
    return new ErrorType(method, err.details, err.metadata);
  }
  return new TokenServiceError(err.code, method, err.details, err.metadata);
}
