import { ConfigError, loadConfig } from "./config";
import { startApp } from "./app";
import { describeDatabaseError, isConnectionError } from "./db/errors";
import { createLogger } from "./logger";

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
  let app;
  try {
    app = await startApp(config, log);
  } catch (err) {
    const { databaseUrl } = config.database;
    if (databaseUrl === undefined || !isConnectionError(err)) {
      throw err;
    }
    const { host } = new URL(databaseUrl);
    log.fatal(
      { err: describeDatabaseError(err) },
      `start-up failed: cannot connect to PostgreSQL at ${host} from ` +
        `DATABASE_URL; check the URL and that the server is running`,
    );
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
