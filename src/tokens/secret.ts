import { createHmac, hash, randomBytes, timingSafeEqual } from "node:crypto";

/** Prefix of every token this service issues. */
export const TOKEN_PREFIX = "vtk_";

/** Random bytes behind a token; 32 bytes are 43 base64url characters. */
const SECRET_BYTES = 32;

const TOKEN_PATTERN = /^vtk_[A-Za-z0-9_-]{43}$/;
const LEGACY_TOKEN_PATTERN = /^[0-9a-f]{32}$/;

/** Generates a new secret: `vtk_` and 43 base64url characters. */
export function generateSecret(): string {
  return TOKEN_PREFIX + randomBytes(SECRET_BYTES).toString("base64url");
}

/** Returns whether `secret` has the current format. */
export function isCurrentFormat(secret: string): boolean {
  return TOKEN_PATTERN.test(secret);
}

/** Returns whether `secret` is a legacy token: 32 lowercase hex characters. */
export function isLegacyFormat(secret: string): boolean {
  return LEGACY_TOKEN_PATTERN.test(secret);
}

/** Computes the lookup key of a secret: lowercase hex SHA-256. */
export function hashSecret(secret: string): string {
  // The one-shot form builds no Hash object; ValidateToken hashes every
  // secret it is sent, cache hits included.
  return hash("sha256", secret, "hex");
}

/** Computes `sig_` and the hex HMAC-SHA256 of the secret. */
export function signSecret(secret: string, signingSecret: Buffer): string {
  const mac = createHmac("sha256", signingSecret).update(secret, "utf8");
  return "sig_" + mac.digest("hex");
}

/** Checks a signature in constant time against the signing secret. */
export function verifySignature(
  secret: string,
  signature: string,
  signingSecret: Buffer,
): boolean {
  const expected = Buffer.from(signSecret(secret, signingSecret), "utf8");
  const actual = Buffer.from(signature, "utf8");
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/**
 * Masks a secret for logs, audit events and listings: the first 12
 * characters, `...` and the last 4, or `****` for 12 characters or fewer.
 */
export function maskSecret(secret: string): string {
  if (secret.length <= 12) {
    return "****";
  }
  return `${secret.slice(0, 12)}...${secret.slice(-4)}`;
}
