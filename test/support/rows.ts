import { randomUUID } from "node:crypto";
import type { Knex } from "knex";
import type { Config } from "../../src/config";
import { SecretCipher } from "../../src/tokens/cipher";
import { hashSecret, maskSecret, signSecret } from "../../src/tokens/secret";

/** A token row written straight into the database, as older code did. */
export interface SeedToken {
  userId: string;
  orgId?: string;
  kind: "default" | "user";
  label?: string;
  secret: string;
  disabled?: boolean;
  expiresAt?: Date | null;
}

/** Inserts a token row with its secret sealed under the service's key. */
export async function insertToken(
  db: Knex,
  config: Config,
  seed: SeedToken,
): Promise<string> {
  const id = randomUUID();
  const cipher = new SecretCipher(config.keys.encryptionKey!);
  const sealed = cipher.seal(seed.secret, id);

  await db("api_tokens").insert({
    id,
    user_id: seed.userId,
    org_id: seed.orgId ?? "",
    label: seed.label ?? "Default",
    kind: seed.kind,
    token_hash: hashSecret(seed.secret),
    secret_key_id: sealed.keyId,
    secret_ciphertext: sealed.ciphertext,
    secret_masked: maskSecret(seed.secret),
    signature: signSecret(seed.secret, config.keys.signingSecret!),
    disabled: seed.disabled ?? false,
    created_at: db.fn.now(),
    updated_at: db.fn.now(),
    expires_at:
      seed.expiresAt === undefined
        ? db.raw("now() + interval '30 days'")
        : seed.expiresAt,
  });
  return id;
}

/** Decrypts the stored secret of a token row. */
export function storedSecret(config: Config, row: Record<string, any>): string {
  const cipher = new SecretCipher(config.keys.encryptionKey!);
  return cipher.open(
    { keyId: row.secret_key_id, ciphertext: row.secret_ciphertext },
    row.id,
  );
}
