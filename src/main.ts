import * as grpc from "@grpc/grpc-js";
import { ConfigError, loadConfig } from "./config";
import { startApp } from "./app";
import {
  describeDatabaseError,
  errorCode,
  isConnectionError,
  SqlState,
} from "./db/errors";
import { createLogger } from "./logger";

/**
 * Describes a start-up failure caused by the database at DATABASE_URL, or
 * returns undefined for any other failure.
 */
function describeStartFailure(
  err: unknown,
  databaseUrl: string | undefined,
): string | undefined {
  if (databaseUrl === undefined) {
    return undefined;
  }
  const url = new URL(databaseUrl);
  if (errorCode(err) === SqlState.invalidCatalogName) {
    const name = decodeURIComponent(url.pathname.slice(1));
    return (
      `start-up failed: database "${name}" does not exist on ${url.host}; ` +
      `create it (createdb) or fix DATABASE_URL`
    );
  }
  if (isConnectionError(err)) {
    return (
      `start-up failed: cannot connect to PostgreSQL at ${url.host} from ` +
      `DATABASE_URL; check the URL and that the server is running`
    );
  }
  return undefined;
}

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      createLogger("info").fatal(`invalid configuration: ${err.message}`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }

  const log = createLogger(config.logLevel);
  // grpc-js writes its own errors, such as a metadata value it dropped, as
  // plain text on standard error. This logger writes them as JSON lines.
  const grpcLog = log.child({ source: "grpc-js" });
  grpc.setLogger({
    error: (...args: unknown[]) => grpcLog.warn(args.map(String).join(" ")),
  });

  let app;
  try {
    app = await startApp(config, log);
  } catch (err) {
    const message = describeStartFailure(err, config.database.databaseUrl);
    if (message === undefined) {
      throw err;
    }
    log.fatal({ err: describeDatabaseError(err) }, message);
    process.exit(1);
  }

  const onSignal = (signal: NodeJS.Signals) => {
    log.info({ signal }, "shutting down");
    // The handlers run once, so a second signal ends the process at once;
    // this timer ends a stop that hangs past its own timeout.
    const force = setTimeout(() => {
      log.error("shutdown took too long; exiting");
      process.exit(1);
    }, config.shutdownTimeoutMs + 5000);
    force.unref();
    app.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.once("SIGTERM", onSignal);
  process.once("SIGINT", onSignal);
}

main().catch((err: unknown) => {
  createLogger("info").fatal({ err }, "start-up failed");
  process.exit(1);
});
