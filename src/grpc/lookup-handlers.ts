import {
  type TokenServiceServer,
  ValidationResult,
  type ValidateTokenResponse,
} from "../generated/token/v1/token_service";
import type { DefaultTokens } from "../tokens/default-tokens";
import type {
  TokenValidation,
  TokenValidator,
} from "../tokens/token-validator";
import { toAuditEventMessage } from "./audit-event-message";
import type { PageTokenCodec } from "./page-token";
import { toIssuedTokenMessage, toTokenKind } from "./token-message";
import { type bindUnary, logTokenId } from "./unary";
import {
  DEFAULT_PAGE_SIZE,
  MAX_PAGE_SIZE,
  RequestValidator,
  validateOwner,
} from "./validation";

/** Services the read-only calls use besides the default-token operations. */
export interface LookupServices {
  validator: TokenValidator;
  pageTokens: PageTokenCodec;
}

const RESULTS: Record<TokenValidation["result"], ValidationResult> = {
  valid: ValidationResult.VALIDATION_RESULT_VALID,
  not_found: ValidationResult.VALIDATION_RESULT_NOT_FOUND,
  expired: ValidationResult.VALIDATION_RESULT_EXPIRED,
  disabled: ValidationResult.VALIDATION_RESULT_DISABLED,
  malformed: ValidationResult.VALIDATION_RESULT_MALFORMED,
};

function toValidateTokenResponse(
  validation: TokenValidation,
): ValidateTokenResponse {
  const token = validation.token;
  return {
    result: RESULTS[validation.result],
    tokenId: token?.id ?? "",
    userId: token?.userId ?? "",
    orgId: token?.orgId ?? "",
    kind: token ? toTokenKind(token.kind) : 0,
    label: token?.label ?? "",
    expiresAt: token?.expiresAt ?? undefined,
    previousSecret: validation.previous,
    graceEndsAt: validation.graceEndsAt ?? undefined,
  };
}

/** Implements GetDefault, ValidateToken and ListAuditEvents. */
export function createLookupHandlers(
  tokens: DefaultTokens,
  unary: ReturnType<typeof bindUnary>,
  services: LookupServices,
): Pick<
  TokenServiceServer,
  "getDefault" | "validateToken" | "listAuditEvents"
> {
  return {
    getDefault: unary(
      "GetDefault",
      async (message, context) => {
        const validator = new RequestValidator();
        const owner = validateOwner(validator, message);
        validator.include(context.clientServiceViolation);
        validator.throwIfInvalid();

        const token = await tokens.getDefault(context, owner);
        return { token: toIssuedTokenMessage(token) };
      },
      logTokenId,
    ),

    validateToken: unary(
      "ValidateToken",
      async (message, context) => {
        const validator = new RequestValidator();
        validator.include(context.clientServiceViolation);
        validator.throwIfInvalid();

        const validation = await services.validator.validate(
          context,
          message.secret,
        );
        return toValidateTokenResponse(validation);
      },
      // The call line shows operators why a gateway turned a token away.
      (response) => ({
        result: ValidationResult[response.result],
        tokenId: response.tokenId || undefined,
      }),
    ),

    listAuditEvents: unary("ListAuditEvents", async (message, context) => {
      const validator = new RequestValidator();
      const owner = validateOwner(validator, message);
      const pageSize = validator.pageSize(
        "page_size",
        message.pageSize,
        DEFAULT_PAGE_SIZE,
        MAX_PAGE_SIZE,
      );
      validator.include(context.clientServiceViolation);
      validator.throwIfInvalid();
      const beforeId =
        message.pageToken === ""
          ? undefined
          : services.pageTokens.decode(owner, message.pageToken);

      // Reading one row more than the page shows whether another page follows.
      const events = await tokens.listAuditEvents(
        context,
        owner,
        beforeId,
        pageSize + 1,
      );
      const page = events.slice(0, pageSize);
      const nextPageToken =
        events.length > pageSize
          ? services.pageTokens.encode(owner, page[page.length - 1].id)
          : "";
      return { events: page.map(toAuditEventMessage), nextPageToken };
    }),
  };
}
