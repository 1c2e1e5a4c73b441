import path from "node:path";
import type { DatabaseOptions } from "./db/connection";

/** An AES-256 key with the id stored beside every ciphertext it produced. */
export interface EncryptionKey {
  id: string;
  key: Buffer;
}

/** Keys that encrypt and sign token secrets. */
export interface KeySettings {
  /** Key that encrypts new secrets; unset in embedded mode until loaded. */
  encryptionKey?: EncryptionKey;
  /** Retired keys, kept so that secrets encrypted under them still decrypt. */
  retiredKeys: EncryptionKey[];
  /** HMAC-SHA256 key for token signatures; unset in embedded mode. */
  signingSecret?: Buffer;
}

/** PEM files of the server's TLS identity and of the client CA for mTLS. */
export interface TlsSettings {
  certFile: string;
  keyFile: string;
  /** CA that client certificates must chain to; unset accepts no-cert TLS. */
  clientCaFile?: string;
}

/** Every setting of the service, read once from the environment. */
export interface Config {
  /** host:port the gRPC server listens on. */
  grpcAddress: string;
  /** TLS settings; unset serves plaintext, for local use and tests. */
  tls?: TlsSettings;
  database: DatabaseOptions;
  /** Milliseconds a transaction waits for a row lock before ABORTED. */
  lockTimeoutMs: number;
  /** Milliseconds any one statement may run. */
  statementTimeoutMs: number;
  /** Retries of a transaction after a serialization failure or deadlock. */
  maxRetries: number;
  /** Days from a token's creation or regeneration to its expiry. */
  tokenLifetimeDays: number;
  /** Milliseconds between database health probes. */
  healthCheckIntervalMs: number;
  /** Milliseconds in-flight calls get to finish after SIGTERM or SIGINT. */
  shutdownTimeoutMs: number;
  /** Largest request message the server accepts, in bytes. */
  maxMessageBytes: number;
  /** pino log level. */
  logLevel: string;
  /** Milliseconds a ValidateToken result is cached; 0 turns the cache off. */
  validationCacheTtlMs: number;
  /** Maximum number of cached ValidateToken results. */
  validationCacheMaxEntries: number;
  /** Seconds a mutating call's response is replayed to its retries. */
  idempotencyTtlSeconds: number;
  keys: KeySettings;
}

/** A setting that is missing or malformed; the message names the variable. */
export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Environment variables by name. */
export type Env = Record<string, string | undefined>;

/**
 * Reads a whole-number setting, or `fallback` when it is unset or empty.
 *
 * @throws ConfigError naming the variable when the value is out of range.
 */
export function readInteger(
  env: Env,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") {
    return fallback;
  }

  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(
      `${name}=${JSON.stringify(raw)} is invalid: set a whole number ` +
        `from ${min} to ${max}, or unset it for the default ${fallback}`,
    );
  }
  return value;
}

function decodeKey(name: string, id: string, encoded: string): EncryptionKey {
  if (!/^[A-Za-z0-9_.-]{1,32}$/.test(id)) {
    throw new ConfigError(
      `${name}: key id ${JSON.stringify(id)} is invalid: use 1 to 32 ` +
        `letters, digits, '.', '_' or '-'`,
    );
  }

  const key = Buffer.from(encoded, "base64");
  if (key.length !== 32) {
    throw new ConfigError(
      `${name}: key ${JSON.stringify(id)} decodes to ${key.length} bytes; ` +
        `AES-256 needs 32 (make one with: openssl rand -base64 32)`,
    );
  }
  return { id, key };
}

function readKeys(env: Env, embedded: boolean): KeySettings {
  const retiredKeys = (env.TOKEN_RETIRED_KEYS ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "")
    .map((entry) => {
      const separator = entry.indexOf(":");
      if (separator < 1) {
        throw new ConfigError(
          "TOKEN_RETIRED_KEYS is invalid: write comma-separated " +
            "id:base64key pairs",
        );
      }
      return decodeKey(
        "TOKEN_RETIRED_KEYS",
        entry.slice(0, separator),
        entry.slice(separator + 1),
      );
    });

  const encoded = env.TOKEN_ENCRYPTION_KEY;
  const encryptionKey = encoded
    ? decodeKey(
        "TOKEN_ENCRYPTION_KEY",
        env.TOKEN_ENCRYPTION_KEY_ID || "k1",
        encoded,
      )
    : undefined;

  const signing = env.TOKEN_SIGNING_SECRET;
  if (signing !== undefined && signing !== "" && signing.length < 32) {
    throw new ConfigError(
      "TOKEN_SIGNING_SECRET is too short: use at least 32 characters " +
        "(make one with: openssl rand -base64 32)",
    );
  }
  const signingSecret = signing ? Buffer.from(signing, "utf8") : undefined;

  if (!embedded && !encryptionKey) {
    throw new ConfigError(
      "TOKEN_ENCRYPTION_KEY is missing: with DATABASE_URL set, set it to a " +
        "base64 AES-256 key (make one with: openssl rand -base64 32)",
    );
  }
  if (!embedded && !signingSecret) {
    throw new ConfigError(
      "TOKEN_SIGNING_SECRET is missing: with DATABASE_URL set, set it to at " +
        "least 32 random characters (make one with: openssl rand -base64 32)",
    );
  }
  return { encryptionKey, retiredKeys, signingSecret };
}

function readTls(env: Env): TlsSettings | undefined {
  const certFile = env.GRPC_TLS_CERT_FILE || undefined;
  const keyFile = env.GRPC_TLS_KEY_FILE || undefined;
  const clientCaFile = env.GRPC_TLS_CLIENT_CA_FILE || undefined;

  if (!certFile && !keyFile) {
    if (clientCaFile) {
      throw new ConfigError(
        "GRPC_TLS_CLIENT_CA_FILE is set without GRPC_TLS_CERT_FILE and " +
          "GRPC_TLS_KEY_FILE: set both to serve TLS",
      );
    }
    return undefined;
  }
  if (!certFile || !keyFile) {
    throw new ConfigError(
      "set both GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE to serve TLS, or " +
        "neither to serve plaintext",
    );
  }
  return { certFile, keyFile, clientCaFile };
}

/** Schemes of the connection strings that node-postgres accepts. */
const DATABASE_URL_SCHEMES = ["postgres:", "postgresql:", "socket:"];

/**
 * Reads DATABASE_URL, or undefined when it is unset or empty.
 *
 * @throws ConfigError when the value is not a PostgreSQL URL. The message
 *   leaves the value out, as it may hold a password.
 */
function readDatabaseUrl(env: Env): string | undefined {
  const raw = env.DATABASE_URL;
  if (raw === undefined || raw === "") {
    return undefined;
  }
  if (
    !URL.canParse(raw) ||
    !DATABASE_URL_SCHEMES.includes(new URL(raw).protocol)
  ) {
    throw new ConfigError(
      "DATABASE_URL is invalid: set a URL such as " +
        "postgres://USER:PASSWORD@HOST:5432/DATABASE, or unset it to use " +
        "the embedded database",
    );
  }
  return raw;
}

/** Reads the database settings alone, which migrations need. */
export function loadDatabaseOptions(env: Env = process.env): DatabaseOptions {
  return {
    databaseUrl: readDatabaseUrl(env),
    dataDir: path.resolve(env.DATA_DIR || "data"),
    poolMax: readInteger(env, "DB_POOL_MAX", 10, 1, 1000),
    connectTimeoutMs: readInteger(
      env,
      "DB_CONNECT_TIMEOUT_MS",
      2000,
      1,
      600_000,
    ),
    statementTimeoutMs: readInteger(
      env,
      "STATEMENT_TIMEOUT_MS",
      5000,
      1,
      600_000,
    ),
    acquireTimeoutMs: readInteger(
      env,
      "DB_ACQUIRE_TIMEOUT_MS",
      10_000,
      1,
      600_000,
    ),
  };
}

/**
 * Reads and validates every setting from the environment.
 *
 * @throws ConfigError naming the variable to fix.
 */
export function loadConfig(env: Env = process.env): Config {
  const database = loadDatabaseOptions(env);

  return {
    grpcAddress: env.GRPC_ADDRESS || "127.0.0.1:50051",
    tls: readTls(env),
    database,
    lockTimeoutMs: readInteger(env, "LOCK_TIMEOUT_MS", 2000, 1, 600_000),
    statementTimeoutMs: database.statementTimeoutMs,
    maxRetries: readInteger(env, "TX_MAX_RETRIES", 3, 0, 20),
    tokenLifetimeDays: readInteger(env, "API_KEY_EXPIRY_DAYS", 90, 1, 3650),
    healthCheckIntervalMs: readInteger(
      env,
      "HEALTH_CHECK_INTERVAL_MS",
      5000,
      100,
      600_000,
    ),
    shutdownTimeoutMs: readInteger(
      env,
      "SHUTDOWN_TIMEOUT_MS",
      10_000,
      0,
      600_000,
    ),
    maxMessageBytes: readInteger(
      env,
      "GRPC_MAX_MESSAGE_BYTES",
      64 * 1024,
      1024,
      4 * 1024 * 1024,
    ),
    logLevel: env.LOG_LEVEL || "info",
    validationCacheTtlMs: readInteger(
      env,
      "VALIDATION_CACHE_TTL_MS",
      5000,
      0,
      60_000,
    ),
    validationCacheMaxEntries: readInteger(
      env,
      "VALIDATION_CACHE_MAX_ENTRIES",
      10_000,
      1,
      1_000_000,
    ),
    idempotencyTtlSeconds: readInteger(
      env,
      "IDEMPOTENCY_TTL_SECONDS",
      86_400,
      60,
      30 * 86_400,
    ),
    keys: readKeys(env, database.databaseUrl === undefined),
  };
}
