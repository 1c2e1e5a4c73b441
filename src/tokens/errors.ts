/** One invalid request field, in the terms of google.rpc.BadRequest. */
export interface FieldViolation {
  /** Path of the field in the request, such as `audit.client_ip`. */
  field: string;
  /** What is wrong and how to fix it. */
  description: string;
}

/** Base of the errors the gRPC layer maps to a status code. */
export abstract class TokenServiceError extends Error {}

/** The request is malformed; nothing was read or written. */
export class InvalidArgumentError extends TokenServiceError {
  override name = "InvalidArgumentError";

  constructor(readonly violations: FieldViolation[]) {
    super(violations.map((v) => v.description).join("; "));
  }
}

/** CreateDefault found a default token already in place. */
export class DefaultTokenExistsError extends TokenServiceError {
  override name = "DefaultTokenExistsError";

  constructor(readonly tokenId: string) {
    super(
      `a default token already exists (id ${tokenId}); call Regenerate to ` +
        `give it a new secret`,
    );
  }
}

/** The user has no default token in the organization. */
export class DefaultTokenNotFoundError extends TokenServiceError {
  override name = "DefaultTokenNotFoundError";

  /** `hint` is the caller's next step, appended to the message. */
  constructor(hint = "set allow_missing to treat this as success") {
    super(`no default token exists for this user_id and org_id; ${hint}`);
  }
}

/** A lock wait, statement timeout or conflict ended the transaction. */
export class TransactionAbortedError extends TokenServiceError {
  override name = "TransactionAbortedError";
}

/** The database could not be reached; the caller may retry. */
export class DatabaseUnavailableError extends TokenServiceError {
  override name = "DatabaseUnavailableError";
}

/** The call's deadline passed or the client cancelled it. */
export class DeadlineExceededError extends TokenServiceError {
  override name = "DeadlineExceededError";
}

/** The request message is larger than the configured maximum. */
export class RequestTooLargeError extends TokenServiceError {
  override name = "RequestTooLargeError";
}
