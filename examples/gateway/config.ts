import fs from "node:fs";
import path from "node:path";
import { type Env, readInteger } from "../../src/config";

/** Settings of the example gateway, read from the environment. */
export interface GatewayConfig {
  serviceAddress: string;
  serviceTimeoutMs: number;
  clientService: string;
  signingSecret: Buffer | undefined;
  host: string;
  port: number;
  trustedProxyHops: number;
  logLevel: string;
}

/**
 * Reads the signing secret as the service does: TOKEN_SIGNING_SECRET as
 * UTF-8, or else the base64 development key that the service writes to
 * DATA_DIR/dev-keys.json in embedded mode. Returns undefined when neither
 * is set.
 */
function readSigningSecret(env: Env): Buffer | undefined {
  if (env.TOKEN_SIGNING_SECRET) {
    return Buffer.from(env.TOKEN_SIGNING_SECRET, "utf8");
  }

  const file = path.resolve(env.DATA_DIR || "data", "dev-keys.json");
  if (!fs.existsSync(file)) {
    return undefined;
  }
  const keys = JSON.parse(fs.readFileSync(file, "utf8")) as {
    signingSecret: string;
  };
  return Buffer.from(keys.signingSecret, "base64");
}

/**
 * Reads and validates the gateway's settings.
 *
 * @throws Error naming the variable to fix.
 */
export function loadGatewayConfig(env: Env = process.env): GatewayConfig {
  return {
    serviceAddress: env.TOKEN_SERVICE_ADDRESS || "127.0.0.1:50051",
    serviceTimeoutMs: readInteger(
      env,
      "TOKEN_SERVICE_TIMEOUT_MS",
      2000,
      1,
      600_000,
    ),
    clientService: env.GATEWAY_CLIENT_SERVICE || "example-gateway",
    signingSecret: readSigningSecret(env),
    host: env.GATEWAY_HOST || "127.0.0.1",
    port: readInteger(env, "GATEWAY_PORT", 8080, 0, 65_535),
    trustedProxyHops: readInteger(env, "GATEWAY_TRUSTED_PROXY_HOPS", 0, 0, 10),
    logLevel: env.LOG_LEVEL || "info",
  };
}
