import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { EncryptionKey, KeySettings } from "./config";
import type { Logger } from "./logger";

/** Keys the service runs with, every one present. */
export interface ResolvedKeys {
  encryptionKey: EncryptionKey;
  retiredKeys: EncryptionKey[];
  signingSecret: Buffer;
}

const DEV_KEYS_FILE = "dev-keys.json";

interface DevKeysFile {
  encryptionKeyId: string;
  encryptionKey: string;
  signingSecret: string;
}

/**
 * Loads the development keys from the data folder, creating them on first
 * use. Only the embedded mode calls this: with DATABASE_URL set, the
 * configuration requires real keys.
 */
function loadDevelopmentKeys(dataDir: string, log: Logger): DevKeysFile {
  const file = path.join(dataDir, DEV_KEYS_FILE);
  if (fs.existsSync(file)) {
    return JSON.parse(fs.readFileSync(file, "utf8")) as DevKeysFile;
  }

  const keys: DevKeysFile = {
    encryptionKeyId: "dev",
    encryptionKey: randomBytes(32).toString("base64"),
    signingSecret: randomBytes(32).toString("base64"),
  };
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, JSON.stringify(keys, null, 2), { mode: 0o600 });
  log.warn(
    { file },
    "generated development keys; set TOKEN_ENCRYPTION_KEY and " +
      "TOKEN_SIGNING_SECRET for any real use",
  );
  return keys;
}

/** Fills in the development keys where the configuration left them unset. */
export function resolveKeys(
  settings: KeySettings,
  dataDir: string,
  log: Logger,
): ResolvedKeys {
  if (settings.encryptionKey && settings.signingSecret) {
    return {
      encryptionKey: settings.encryptionKey,
      retiredKeys: settings.retiredKeys,
      signingSecret: settings.signingSecret,
    };
  }

  const dev = loadDevelopmentKeys(dataDir, log);
  return {
    encryptionKey: settings.encryptionKey ?? {
      id: dev.encryptionKeyId,
      key: Buffer.from(dev.encryptionKey, "base64"),
    },
    retiredKeys: settings.retiredKeys,
    signingSecret:
      settings.signingSecret ?? Buffer.from(dev.signingSecret, "base64"),
  };
}
