export {
  type CallSettings,
  CLIENT_SERVICE_KEY,
  createTokenServiceClient,
  DEFAULT_TIMEOUT_MS,
  type TlsOptions,
  type TokenServiceClientOptions,
  type TokenServiceMethods,
  type TypedTokenServiceClient,
} from "./client";
export {
  AbortedError,
  AlreadyExistsError,
  DeadlineExceededError,
  type FieldViolation,
  InternalError,
  InvalidArgumentError,
  NotFoundError,
  TokenServiceError,
  toTokenServiceError,
  UnavailableError,
} from "./errors";
export {
  backoffDelayMs,
  DEFAULT_RETRY_POLICY,
  type RetryPolicy,
} from "./retry";
export { verifyTokenSignature } from "./signature";
