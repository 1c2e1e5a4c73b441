import {
  type AuditContext as AuditContextMessage,
  CreateDefaultRequest,
  DeleteRequest,
  GetOrProvisionRequest,
  RegenerateRequest,
  type TokenServiceServer,
} from "../generated/token/v1/token_service";
import type { Logger } from "../logger";
import type {
  DefaultTokenRequest,
  DefaultTokens,
} from "../tokens/default-tokens";
import { fingerprintRequest } from "../tokens/idempotency";
import { createLookupHandlers, type LookupServices } from "./lookup-handlers";
import { toIssuedTokenMessage, toTokenMessage } from "./token-message";
import {
  bindUnary,
  type CallContext,
  type CallHooks,
  logTokenId,
} from "./unary";
import {
  MAX_GRACE_PERIOD_MS,
  RequestValidator,
  validateAudit,
  validateOwner,
} from "./validation";

interface OwnerRequestMessage {
  userId: string;
  orgId: string;
  audit?: AuditContextMessage;
}

/** The protobuf encoder of a request message type. */
interface RequestCodec<T> {
  encode(message: T): { finish(): Uint8Array };
}

/**
 * Validates the fields every default-token request shares, and
 * fingerprints the whole request (its protobuf encoding, which ts-proto
 * writes in field order) so that a retry under the same request id can be
 * distinguished from a different request. A request with no request id
 * is never replayed, so it gets no fingerprint.
 *
 * @throws InvalidArgumentError naming every invalid field.
 */
function parseRequest<T extends OwnerRequestMessage>(
  message: T,
  codec: RequestCodec<T>,
  context: CallContext,
  validator = new RequestValidator(),
): DefaultTokenRequest {
  const owner = validateOwner(validator, message);
  const audit = validateAudit(validator, message.audit);
  validator.include(context.clientServiceViolation);
  validator.throwIfInvalid();

  const fingerprint =
    audit.requestId === ""
      ? undefined
      : fingerprintRequest(context.rpc, codec.encode(message).finish());
  return {
    owner,
    audit,
    rpc: context.rpc,
    clientService: context.clientService,
    fingerprint,
  };
}

/**
 * Implements token.v1.TokenService: the default-token operations here,
 * the read-only calls in lookup-handlers.ts.
 */
export function createTokenServiceHandlers(
  tokens: DefaultTokens,
  log: Logger,
  lookups: LookupServices,
  hooks: CallHooks = {},
): TokenServiceServer {
  const unary = bindUnary(log, hooks);
  return {
    createDefault: unary(
      "CreateDefault",
      async (message, context) => {
        const request = parseRequest(message, CreateDefaultRequest, context);
        const token = await tokens.createDefault(context, request);
        return { token: toIssuedTokenMessage(token) };
      },
      logTokenId,
    ),

    regenerate: unary(
      "Regenerate",
      async (message, context) => {
        const validator = new RequestValidator();
        const gracePeriodMs = validator.duration(
          "grace_period",
          message.gracePeriod,
          MAX_GRACE_PERIOD_MS,
        );
        const request = parseRequest(
          message,
          RegenerateRequest,
          context,
          validator,
        );

        const result = await tokens.regenerate(context, request, gracePeriodMs);
        return {
          token: toIssuedTokenMessage(result.token),
          created: result.created,
          graceEndsAt: result.graceEndsAt ?? undefined,
        };
      },
      logTokenId,
    ),

    getOrProvision: unary(
      "GetOrProvision",
      async (message, context) => {
        const request = parseRequest(message, GetOrProvisionRequest, context);
        const result = await tokens.getOrProvision(context, request);
        return {
          token: toIssuedTokenMessage(result.token),
          provisioned: result.provisioned,
        };
      },
      logTokenId,
    ),

    delete: unary(
      "Delete",
      async (message, context) => {
        const request = parseRequest(message, DeleteRequest, context);
        const deleted = await tokens.delete(
          context,
          request,
          message.allowMissing,
        );
        return { token: deleted ? toTokenMessage(deleted) : undefined };
      },
      logTokenId,
    ),

    ...createLookupHandlers(tokens, unary, lookups),
  };
}
