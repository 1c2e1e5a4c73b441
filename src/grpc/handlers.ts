import type {
  AuditContext as AuditContextMessage,
  TokenServiceServer,
} from "../generated/token/v1/token_service";
import type { Logger } from "../logger";
import type {
  DefaultTokenRequest,
  DefaultTokens,
} from "../tokens/default-tokens";
import { toIssuedTokenMessage, toTokenMessage } from "./token-message";
import { bindUnary, type CallContext, type CallHooks } from "./unary";
import { RequestValidator, validateAudit, validateOwner } from "./validation";

interface OwnerRequestMessage {
  userId: string;
  orgId: string;
  audit?: AuditContextMessage;
}

/**
 * Validates the fields every default-token request shares.
 *
 * @throws InvalidArgumentError naming every invalid field.
 */
function parseRequest(
  message: OwnerRequestMessage,
  context: CallContext,
): DefaultTokenRequest {
  const validator = new RequestValidator();
  const owner = validateOwner(validator, message);
  const audit = validateAudit(validator, message.audit);
  if (context.clientServiceViolation) {
    validator.violations.push(context.clientServiceViolation);
  }
  validator.throwIfInvalid();

  return {
    owner,
    audit,
    rpc: context.rpc,
    clientService: context.clientService,
  };
}

/** Implements token.v1.TokenService on the default-token operations. */
export function createTokenServiceHandlers(
  tokens: DefaultTokens,
  log: Logger,
  hooks: CallHooks = {},
): TokenServiceServer {
  const unary = bindUnary(log, hooks);
  return {
    createDefault: unary("CreateDefault", async (message, context) => {
      const request = parseRequest(message, context);
      const token = await tokens.createDefault(context, request);
      return { token: toIssuedTokenMessage(token) };
    }),

    regenerate: unary("Regenerate", async (message, context) => {
      const request = parseRequest(message, context);
      const result = await tokens.regenerate(context, request);
      return {
        token: toIssuedTokenMessage(result.token),
        created: result.created,
      };
    }),

    getOrProvision: unary("GetOrProvision", async (message, context) => {
      const request = parseRequest(message, context);
      const result = await tokens.getOrProvision(context, request);
      return {
        token: toIssuedTokenMessage(result.token),
        provisioned: result.provisioned,
      };
    }),

    delete: unary("Delete", async (message, context) => {
      const request = parseRequest(message, context);
      const deleted = await tokens.delete(
        context,
        request,
        message.allowMissing,
      );
      return { token: deleted ? toTokenMessage(deleted) : undefined };
    }),
  };
}
