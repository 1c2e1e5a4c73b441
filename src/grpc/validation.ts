import { isIP } from "node:net";
import type { Duration } from "../generated/google/protobuf/duration";
import type { AuditContext as AuditContextMessage } from "../generated/token/v1/token_service";
import type { AuditContext } from "../tokens/audit";
import { type FieldViolation, InvalidArgumentError } from "../tokens/errors";
import type { TokenOwner } from "../tokens/repository";

/** Maximum length of user_id, org_id and audit.actor_id, in characters. */
export const MAX_ID_LENGTH = 255;
const MAX_REQUEST_ID_LENGTH = 128;
const MAX_USER_AGENT_LENGTH = 1024;
const MAX_CLIENT_IP_LENGTH = 64;

/** Maximum time a rotation keeps the previous secret valid. */
export const MAX_GRACE_PERIOD_MS = 24 * 60 * 60 * 1000;
/** ListAuditEvents page size when the request leaves it 0. */
export const DEFAULT_PAGE_SIZE = 50;
/** Largest ListAuditEvents page size. */
export const MAX_PAGE_SIZE = 500;
const NANOS_PER_MS = 1_000_000;

// Control, format (zero-width and bidirectional marks), surrogate, private
// use, line and paragraph separator characters, and U+FFFD. Any of them
// would let a stored id or audit field display as something else.
const FORBIDDEN_CHARACTER = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Zl}\p{Zp}\uFFFD]/u;
const NANOS_PER_SECOND = 1_000_000_000;
const LEADING_COMBINING_MARK = /^\p{M}/u;

/** Collects the violations of one request before any database work. */
export class RequestValidator {
  readonly violations: FieldViolation[] = [];

  /**
   * Checks an identifier: length bounds, no control or invisible
   * characters, Unicode NFC form and no surrounding whitespace. NFC is
   * required rather than applied, so that two spellings of one name can
   * never own two tokens and the stored id is the one the caller sent.
   */
  identifier(field: string, value: string, minLength: number): string {
    const length = [...value].length;
    if (length < minLength) {
      this.add(field, `${field} is required: set it to a non-empty id`);
    } else if (length > MAX_ID_LENGTH) {
      this.add(
        field,
        `${field} is ${length} characters long; the maximum is ` +
          `${MAX_ID_LENGTH}`,
      );
    } else if (this.checkCharacters(field, value)) {
      if (value.normalize("NFC") !== value) {
        this.add(
          field,
          `${field} is not in Unicode normalization form C; normalize it ` +
            `with NFC before sending`,
        );
      } else if (LEADING_COMBINING_MARK.test(value)) {
        this.add(field, `${field} starts with a combining mark; remove it`);
      } else if (value.trim() !== value) {
        this.add(field, `${field} has leading or trailing whitespace; trim it`);
      }
    }
    return value;
  }

  /** Checks free text: a maximum length, no control or invisible characters. */
  text(field: string, value: string, maxLength: number): string {
    const length = [...value].length;
    if (length > maxLength) {
      this.add(
        field,
        `${field} is ${length} characters long; the maximum is ${maxLength}`,
      );
    } else {
      this.checkCharacters(field, value);
    }
    return value;
  }

  /** Checks an optional IPv4 or IPv6 address. */
  ipAddress(field: string, value: string): string {
    if (value === "") {
      return value;
    }
    if (value.length > MAX_CLIENT_IP_LENGTH || isIP(value) === 0) {
      this.add(
        field,
        `${field} is not an IPv4 or IPv6 address; send the client's ` +
          `address without a port, or leave it empty`,
      );
    }
    return value;
  }

  /** Returns whether `value` is free of forbidden characters; adds a violation if not. */
  private checkCharacters(field: string, value: string): boolean {
    const chars = [...value];
    const index = chars.findIndex((char) => FORBIDDEN_CHARACTER.test(char));
    if (index < 0) {
      return true;
    }

    const codePoint = chars[index].codePointAt(0) ?? 0;
    const hex = codePoint.toString(16).toUpperCase().padStart(4, "0");
    this.add(
      field,
      `${field} contains a control or invisible character (U+${hex} at ` +
        `character ${index + 1}); remove it`,
    );
    return false;
  }

  /**
   * Checks an optional google.protobuf.Duration of 0 to `maxMs` and returns
   * it in whole milliseconds (finer parts dropped); unset is 0.
   */
  duration(field: string, value: Duration | undefined, maxMs: number): number {
    if (!value) {
      return 0;
    }

    const { seconds, nanos } = value;
    const sign = seconds < 0 || nanos < 0 ? "-" : "";
    const text =
      nanos === 0
        ? `${seconds}s`
        : `${sign}${Math.abs(seconds)}.` +
          `${String(Math.abs(nanos)).padStart(9, "0")}s`;
    const maxSeconds = maxMs / 1000;
    if (
      !Number.isInteger(nanos) ||
      nanos <= -NANOS_PER_SECOND ||
      nanos >= NANOS_PER_SECOND
    ) {
      this.add(
        field,
        `${field}.nanos is ${nanos}; send -999999999 to 999999999`,
      );
      return 0;
    }
    if ((seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0)) {
      this.add(
        field,
        `${field}.seconds (${seconds}) and ${field}.nanos (${nanos}) have ` +
          `opposite signs; send both with the same sign, as ` +
          `google.protobuf.Duration requires`,
      );
      return 0;
    }
    if (seconds < 0 || nanos < 0) {
      this.add(
        field,
        `${field} is negative (${text}); send 0 or a positive duration`,
      );
      return 0;
    }
    // Compared in nanoseconds, so that 86400 s and 1 ns is over 86400 s.
    const totalNanos =
      BigInt(seconds) * BigInt(NANOS_PER_SECOND) + BigInt(nanos);
    if (totalNanos > BigInt(maxMs) * BigInt(NANOS_PER_MS)) {
      this.add(
        field,
        `${field} is ${text}, over the maximum of ${maxSeconds}s; send a ` +
          `shorter duration`,
      );
      return 0;
    }
    return seconds * 1000 + Math.floor(nanos / NANOS_PER_MS);
  }

  /** Checks a page size: 0 for `fallback`, else 1 to `max`. */
  pageSize(field: string, value: number, fallback: number, max: number) {
    if (value === 0) {
      return fallback;
    }
    if (!Number.isInteger(value) || value < 1 || value > max) {
      this.add(
        field,
        `${field} is ${value}; send 1 to ${max}, or 0 for the default ` +
          `of ${fallback}`,
      );
    }
    return value;
  }

  add(field: string, description: string): void {
    this.violations.push({ field, description });
  }

  /** Adds a violation found outside the request message, if there is one. */
  include(violation: FieldViolation | undefined): void {
    if (violation) {
      this.violations.push(violation);
    }
  }

  /** @throws InvalidArgumentError listing every violation found. */
  throwIfInvalid(): void {
    if (this.violations.length > 0) {
      throw new InvalidArgumentError(this.violations);
    }
  }
}

/** Validates the owner fields shared by every default-token request. */
export function validateOwner(
  validator: RequestValidator,
  request: { userId: string; orgId: string },
): TokenOwner {
  return {
    userId: validator.identifier("user_id", request.userId, 1),
    orgId: validator.identifier("org_id", request.orgId, 0),
  };
}

/** Validates the AuditContext; a missing one counts as all fields empty. */
export function validateAudit(
  validator: RequestValidator,
  audit: AuditContextMessage | undefined,
): AuditContext {
  const requestId = audit?.requestId ?? "";
  const actorId = audit?.actorId ?? "";
  const clientIp = audit?.clientIp ?? "";
  const userAgent = audit?.userAgent ?? "";

  return {
    requestId: validator.text(
      "audit.request_id",
      requestId,
      MAX_REQUEST_ID_LENGTH,
    ),
    actorId: validator.identifier("audit.actor_id", actorId, 0),
    clientIp: validator.ipAddress("audit.client_ip", clientIp),
    userAgent: validator.text(
      "audit.user_agent",
      userAgent,
      MAX_USER_AGENT_LENGTH,
    ),
  };
}
