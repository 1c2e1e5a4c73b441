import { verifySignature } from "../tokens/secret";

/**
 * Checks offline, in constant time, that `signature` is the service's
 * signature of `secret`: `sig_` and the lowercase hex HMAC-SHA256 of the
 * secret under the service's signing secret. A string signing secret is
 * taken as UTF-8, as the service reads TOKEN_SIGNING_SECRET.
 */
export function verifyTokenSignature(
  secret: string,
  signature: string,
  signingSecret: string | Buffer,
): boolean {
  const key =
    typeof signingSecret === "string"
      ? Buffer.from(signingSecret, "utf8")
      : signingSecret;
  return verifySignature(secret, signature, key);
}
