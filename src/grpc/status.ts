import { Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { Any } from "../generated/google/protobuf/any";
import {
  BadRequest,
  ErrorInfo,
  ResourceInfo,
} from "../generated/google/rpc/error_details";
import { Status } from "../generated/google/rpc/status";
import {
  DatabaseUnavailableError,
  DeadlineExceededError,
  DefaultTokenExistsError,
  DefaultTokenNotFoundError,
  InvalidArgumentError,
  RequestTooLargeError,
  TransactionAbortedError,
} from "../tokens/errors";

/** Domain of the google.rpc.ErrorInfo details this service sends. */
export const ERROR_DOMAIN = "token.v1.TokenService";

const TYPE_URL_PREFIX = "type.googleapis.com/";

/** A gRPC status with its message and optional rich details. */
export interface CallStatus {
  code: status;
  message: string;
  details: Any[];
}

function pack<T>(
  typeName: string,
  codec: { encode(message: T): { finish(): Uint8Array } },
  message: T,
): Any {
  return {
    typeUrl: TYPE_URL_PREFIX + typeName,
    value: Buffer.from(codec.encode(message).finish()),
  };
}

/**
 * Maps an error to the status the client receives. Returns undefined for
 * errors of no known kind, which the caller reports as INTERNAL after
 * logging them.
 */
export function statusOf(err: unknown): CallStatus | undefined {
  if (err instanceof InvalidArgumentError) {
    // fromPartial fills the fields a violation leaves out, reason and
    // localized_message. The encoder would write undefined as "undefined".
    const badRequest = BadRequest.fromPartial({
      fieldViolations: err.violations,
    });
    return {
      code: status.INVALID_ARGUMENT,
      message: err.message,
      details: [pack("google.rpc.BadRequest", BadRequest, badRequest)],
    };
  }
  if (err instanceof DefaultTokenExistsError) {
    const resource = {
      resourceType: "token.v1.Token",
      resourceName: err.tokenId,
      owner: "",
      description: "the existing default token",
    };
    const info = {
      reason: "DEFAULT_TOKEN_EXISTS",
      domain: ERROR_DOMAIN,
      metadata: { token_id: err.tokenId },
    };
    return {
      code: status.ALREADY_EXISTS,
      message: err.message,
      details: [
        pack("google.rpc.ErrorInfo", ErrorInfo, info),
        pack("google.rpc.ResourceInfo", ResourceInfo, resource),
      ],
    };
  }

  const simple: [new (...args: never[]) => Error, status][] = [
    [DefaultTokenNotFoundError, status.NOT_FOUND],
    [TransactionAbortedError, status.ABORTED],
    [DatabaseUnavailableError, status.UNAVAILABLE],
    [DeadlineExceededError, status.DEADLINE_EXCEEDED],
    [RequestTooLargeError, status.RESOURCE_EXHAUSTED],
  ];
  for (const [type, code] of simple) {
    if (err instanceof type) {
      return { code, message: err.message, details: [] };
    }
  }
  return undefined;
}

/**
 * Builds the error grpc-js sends: the code, the message and, when there are
 * details, a google.rpc.Status in the `grpc-status-details-bin` trailer.
 */
export function toServiceError(callStatus: CallStatus): Partial<ServiceError> {
  const metadata = new Metadata();
  if (callStatus.details.length > 0) {
    const encoded = Status.encode({
      code: callStatus.code,
      message: callStatus.message,
      details: callStatus.details,
    }).finish();
    metadata.set("grpc-status-details-bin", Buffer.from(encoded));
  }
  return { code: callStatus.code, details: callStatus.message, metadata };
}
