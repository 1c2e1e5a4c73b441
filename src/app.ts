import type { Knex } from "knex";
import type { Config } from "./config";
import { openDatabase } from "./db/connection";
import { describeDatabaseError } from "./db/errors";
import { createTokenServiceHandlers } from "./grpc/handlers";
import { PageTokenCodec } from "./grpc/page-token";
import type { CallHooks } from "./grpc/unary";
import {
  bindServer,
  createGrpcServer,
  createServerCredentials,
  TOKEN_SERVICE_NAME,
} from "./grpc/server";
import { resolveKeys } from "./keys";
import type { Logger } from "./logger";
import { SecretCipher } from "./tokens/cipher";
import { DefaultTokens } from "./tokens/default-tokens";
import { TokenValidator } from "./tokens/token-validator";

/** A running service: its bound port, database and stop function. */
export interface App {
  port: number;
  db: Knex;
  tokens: DefaultTokens;
  validator: TokenValidator;
  /**
   * Stops gracefully: reports NOT_SERVING, refuses new calls, lets calls in
   * flight finish for up to `timeoutMs`, cancels the rest and closes the
   * pool.
   */
  stop(timeoutMs?: number): Promise<void>;
}

/** Options that tests set; the service runs with none of them. */
export interface AppOptions {
  /** Test seam run inside every TokenService handler. */
  hooks?: CallHooks;
}

type ServingStatus = "SERVING" | "NOT_SERVING";

function describeTls(config: Config): "off" | "server" | "mutual" {
  if (!config.tls) {
    return "off";
  }
  return config.tls.clientCaFile ? "mutual" : "server";
}

/** Opens the database, runs migrations and starts the gRPC server. */
export async function startApp(
  config: Config,
  log: Logger,
  options: AppOptions = {},
): Promise<App> {
  const keys = resolveKeys(config.keys, config.database.dataDir, log);
  const db = await openDatabase(config.database, log);
  const transaction = {
    lockTimeoutMs: config.lockTimeoutMs,
    statementTimeoutMs: config.statementTimeoutMs,
    maxRetries: config.maxRetries,
  };
  const tokens = new DefaultTokens(
    db,
    new SecretCipher(keys.encryptionKey, keys.retiredKeys),
    keys.signingSecret,
    {
      lifetimeDays: config.tokenLifetimeDays,
      transaction,
      idempotencyTtlSeconds: config.idempotencyTtlSeconds,
    },
  );
  const validator = new TokenValidator(
    db,
    {
      cacheTtlMs: config.validationCacheTtlMs,
      cacheMaxEntries: config.validationCacheMaxEntries,
      transaction,
    },
    log,
  );
  tokens.onTokenChanged((tokenId) => validator.invalidate(tokenId));

  const { server, health, endHealthWatches } = createGrpcServer(
    createTokenServiceHandlers(
      tokens,
      log,
      { validator, pageTokens: new PageTokenCodec(keys.signingSecret) },
      options.hooks,
    ),
    config.maxMessageBytes,
  );
  let port: number;
  try {
    port = await bindServer(
      server,
      config.grpcAddress,
      createServerCredentials(config.tls),
    );
  } catch (err) {
    await db.destroy();
    throw err;
  }

  let stopping = false;
  let servingStatus: ServingStatus | undefined;
  const setServing = (next: ServingStatus) => {
    if (next !== servingStatus) {
      servingStatus = next;
      health.setStatus("", next);
      health.setStatus(TOKEN_SERVICE_NAME, next);
      log.info({ status: next }, "health status changed");
    }
  };
  setServing("SERVING");

  const probe = setInterval(() => {
    db.raw("select 1").then(
      () => !stopping && setServing("SERVING"),
      (err: unknown) => {
        if (!stopping && servingStatus === "SERVING") {
          log.warn(
            { err: describeDatabaseError(err) },
            "database probe failed",
          );
        }
        setServing("NOT_SERVING");
      },
    );
  }, config.healthCheckIntervalMs);
  probe.unref();

  const embedded = config.database.databaseUrl === undefined;
  log.info(
    {
      address: config.grpcAddress,
      port,
      tls: describeTls(config),
      database: embedded ? "pglite" : "postgresql",
    },
    "server started",
  );

  const stop = async (timeoutMs = config.shutdownTimeoutMs) => {
    if (stopping) {
      return;
    }
    stopping = true;
    clearInterval(probe);
    setServing("NOT_SERVING");

    // tryShutdown waits for every open stream, and a health Watch stream
    // stays open until its client ends it, so end those streams first.
    // Their clients have already received NOT_SERVING.
    endHealthWatches();
    const drained = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!drained) {
      log.warn(
        { timeoutMs },
        "calls still running at the shutdown timeout; cancelling them",
      );
      server.forceShutdown();
    }

    await validator.settle();
    await db.destroy();
    log.info({ drained }, "server stopped");
  };

  return { port, db, tokens, validator, stop };
}
