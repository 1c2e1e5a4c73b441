import { randomBytes, randomUUID } from "node:crypto";
import { Writable } from "node:stream";
import {
  type CallOptions,
  credentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import type { Knex } from "knex";
import { type App, type AppOptions, startApp } from "../../src/app";
import { type Config, loadConfig } from "../../src/config";
import type { Duration } from "../../src/generated/google/protobuf/duration";
import { TokenServiceClient } from "../../src/generated/token/v1/token_service";
import { createLogger } from "../../src/logger";
import { connect, createDatabase, dropDatabase } from "./database";

/** Log lines the service wrote during a test, parsed. */
export class LogCapture extends Writable {
  readonly lines: string[] = [];

  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.lines.push(...chunk.toString("utf8").split("\n").filter(Boolean));
    done();
  }

  entries(): Record<string, unknown>[] {
    return this.lines.map((line) => JSON.parse(line));
  }
}

/** A service on port 0 against its own PostgreSQL database. */
export interface TestService {
  app: App;
  client: TokenServiceClient;
  /** A separate pool for checking and disturbing the database. */
  db: Knex;
  config: Config;
  logs: LogCapture;
  databaseUrl: string;
  stop(): Promise<void>;
}

/** Environment with fixed test keys, for the given database. */
export function testEnvironment(databaseUrl?: string): Record<string, string> {
  return {
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
    GRPC_ADDRESS: "127.0.0.1:0",
    TOKEN_ENCRYPTION_KEY: randomBytes(32).toString("base64"),
    TOKEN_ENCRYPTION_KEY_ID: "test1",
    TOKEN_SIGNING_SECRET: randomBytes(32).toString("base64"),
    LOG_LEVEL: "debug",
  };
}

/** Options of startTestService beyond the environment, test seams included. */
export interface TestServiceOptions extends AppOptions {
  /** Changes the URL the service connects with, to route it via a proxy. */
  routeDatabaseUrl?: (url: URL) => void;
}

/** Starts the service on a fresh database; `env` overrides settings. */
export async function startTestService(
  env: Record<string, string> = {},
  options: TestServiceOptions = {},
): Promise<TestService> {
  const name = `token_service_test_${process.pid}_${randomUUID().slice(0, 8)}`;
  const databaseUrl = await createDatabase(name);
  const serviceUrl = new URL(databaseUrl);
  options.routeDatabaseUrl?.(serviceUrl);
  const config = loadConfig({
    ...testEnvironment(serviceUrl.toString()),
    ...env,
  });
  const logs = new LogCapture();
  let app: App;
  try {
    app = await startApp(config, createLogger(config.logLevel, logs), {
      hooks: options.hooks,
    });
  } catch (err) {
    await dropDatabase(name);
    throw err;
  }
  const client = new TokenServiceClient(
    `127.0.0.1:${app.port}`,
    credentials.createInsecure(),
  );
  const db = connect(databaseUrl);

  const stop = async () => {
    client.close();
    await db.destroy();
    await app.stop(2000);
    await dropDatabase(name);
  };
  return { app, client, db, config, logs, databaseUrl, stop };
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (err: ServiceError | null, response: Res) => void,
) => unknown;

/** Calls a unary method of the generated client and awaits the response. */
export function call<Req, Res>(
  client: TokenServiceClient,
  method: UnaryMethod<Req, Res>,
  request: Req,
  options: Partial<CallOptions> = {},
  metadata = new Metadata(),
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, request, metadata, options, (err, response) => {
      if (err) {
        reject(err);
      } else {
        resolve(response);
      }
    });
  });
}

/** Awaits a call that must fail and returns its error. */
export async function callError<Req, Res>(
  client: TokenServiceClient,
  method: UnaryMethod<Req, Res>,
  request: Req,
  options: Partial<CallOptions> = {},
  metadata = new Metadata(),
): Promise<ServiceError> {
  try {
    await call(client, method, request, options, metadata);
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error(`expected the call to fail, but it returned OK`);
}

/** A request with a fresh user id and a full AuditContext. */
export function ownerRequest(userId = `user-${randomUUID()}`, orgId = "") {
  return {
    userId,
    orgId,
    audit: {
      requestId: `req-${randomUUID()}`,
      actorId: "",
      clientIp: "203.0.113.7",
      userAgent: "mocha",
    },
    // Unset: Regenerate rotates without a grace period. Present so that the
    // request also type-checks as a RegenerateRequest.
    gracePeriod: undefined as Duration | undefined,
  };
}

/**
 * Copies a request with a new audit.request_id, for a second call that
 * must run rather than replay the first one's response.
 */
export function withNewRequestId<T extends { audit: { requestId: string } }>(
  request: T,
): T {
  return {
    ...request,
    audit: { ...request.audit, requestId: `req-${randomUUID()}` },
  };
}
