import pino from "pino";
import { createTokenServiceClient } from "../../src";
import { loadGatewayConfig } from "./config";
import { startGateway } from "./server";

async function main(): Promise<void> {
  const config = loadGatewayConfig();
  const log = pino({
    level: config.logLevel,
    base: { service: "example-gateway" },
    timestamp: pino.stdTimeFunctions.isoTime,
  });

  const client = createTokenServiceClient({
    address: config.serviceAddress,
    clientService: config.clientService,
    timeoutMs: config.serviceTimeoutMs,
    log,
  });
  const gateway = await startGateway({
    client,
    signingSecret: config.signingSecret,
    log,
    host: config.host,
    port: config.port,
    trustedProxyHops: config.trustedProxyHops,
  });
  log.info(
    { serviceAddress: config.serviceAddress, host: config.host },
    "gateway ready",
  );

  const stop = (signal: NodeJS.Signals) => {
    log.info({ signal }, "shutting down");
    gateway.close().then(
      () => {
        client.close();
        log.info("gateway stopped");
      },
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exitCode = 1;
        client.close();
      },
    );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  pino().fatal({ err: { message } }, "gateway start-up failed");
  process.exit(1);
});
