import {
  type Token,
  TokenKind,
  TokenStatus,
} from "../generated/token/v1/token_service";
import type { IssuedToken } from "../tokens/default-tokens";
import type { TokenRecord } from "../tokens/repository";

function statusOf(record: TokenRecord): TokenStatus {
  if (record.disabled) {
    return TokenStatus.TOKEN_STATUS_DISABLED;
  }
  return record.expired
    ? TokenStatus.TOKEN_STATUS_EXPIRED
    : TokenStatus.TOKEN_STATUS_ACTIVE;
}

/** Maps a stored token kind to the TokenKind enum. */
export function toTokenKind(kind: TokenRecord["kind"]): TokenKind {
  return kind === "default"
    ? TokenKind.TOKEN_KIND_DEFAULT
    : TokenKind.TOKEN_KIND_USER;
}

/**
 * Builds the Token message. The secret is included only when `issued`
 * carries one, which is where the RPC hands it out.
 */
export function toTokenMessage(
  record: TokenRecord,
  issued?: Pick<IssuedToken, "secret" | "signature">,
): Token {
  return {
    id: record.id,
    userId: record.userId,
    orgId: record.orgId,
    label: record.label,
    kind: toTokenKind(record.kind),
    secret: issued?.secret ?? "",
    masked: record.masked,
    signature: issued?.signature || record.signature || "",
    status: statusOf(record),
    createdAt: record.createdAt,
    updatedAt: record.updatedAt,
    expiresAt: record.expiresAt ?? undefined,
    lastUsedAt: record.lastUsedAt ?? undefined,
  };
}

/** Builds the Token message of an issued token, secret included. */
export function toIssuedTokenMessage(token: IssuedToken): Token {
  return toTokenMessage(token.record, token);
}
