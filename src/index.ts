export { type App, startApp } from "./app";
export { type Config, ConfigError, loadConfig } from "./config";
export * from "./generated/token/v1/token_service";
export { createLogger } from "./logger";
export { hashSecret, maskSecret, verifySignature } from "./tokens/secret";
export * from "./client";
