import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import type { EncryptionKey } from "../config";

const IV_BYTES = 12;
const TAG_BYTES = 16;

/** A secret sealed with AES-256-GCM, and the id of the key that sealed it. */
export interface SealedSecret {
  keyId: string;
  /** IV (12 bytes), then the GCM tag (16 bytes), then the ciphertext. */
  ciphertext: Buffer;
}

/** A stored secret whose key is unknown or whose ciphertext fails to open. */
export class SecretDecryptionError extends Error {
  override name = "SecretDecryptionError";
}

/**
 * Encrypts and decrypts token secrets. The token id is the additional
 * authenticated data, so a ciphertext copied onto another row fails to
 * decrypt instead of handing out another user's secret.
 */
export class SecretCipher {
  private readonly keysById: Map<string, Buffer>;

  constructor(
    private readonly current: EncryptionKey,
    retired: EncryptionKey[] = [],
  ) {
    this.keysById = new Map(retired.map((entry) => [entry.id, entry.key]));
    this.keysById.set(current.id, current.key);
  }

  /** Encrypts a secret under the current key, bound to the token id. */
  seal(secret: string, tokenId: string): SealedSecret {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv("aes-256-gcm", this.current.key, iv);
    cipher.setAAD(Buffer.from(tokenId, "utf8"));

    const body = Buffer.concat([cipher.update(secret, "utf8"), cipher.final()]);
    const ciphertext = Buffer.concat([iv, cipher.getAuthTag(), body]);
    return { keyId: this.current.id, ciphertext };
  }

  /**
   * Decrypts a secret sealed by `seal` for the same token id.
   *
   * @throws SecretDecryptionError when the key id is not configured or the
   *   ciphertext was altered.
   */
  open(sealed: SealedSecret, tokenId: string): string {
    const key = this.keysById.get(sealed.keyId);
    if (!key) {
      throw new SecretDecryptionError(
        `no encryption key with id ${JSON.stringify(sealed.keyId)} is ` +
          `configured: add it to TOKEN_RETIRED_KEYS`,
      );
    }

    const iv = sealed.ciphertext.subarray(0, IV_BYTES);
    const tag = sealed.ciphertext.subarray(IV_BYTES, IV_BYTES + TAG_BYTES);
    const body = sealed.ciphertext.subarray(IV_BYTES + TAG_BYTES);
    try {
      const decipher = createDecipheriv("aes-256-gcm", key, iv);
      decipher.setAAD(Buffer.from(tokenId, "utf8"));
      decipher.setAuthTag(tag);
      return Buffer.concat([decipher.update(body), decipher.final()]).toString(
        "utf8",
      );
    } catch {
      throw new SecretDecryptionError(
        `the stored secret of token ${tokenId} failed authentication ` +
          `under key ${JSON.stringify(sealed.keyId)}`,
      );
    }
  }
}
