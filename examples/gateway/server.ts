import { randomUUID } from "node:crypto";
import {
  createServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { TypedTokenServiceClient } from "../../src";
import { auditContext, readHeader, requestId } from "./audit";
import { errorResponse } from "./errors";
import { HttpError, readJsonBody, sendJson } from "./http-io";
import {
  generateToken,
  login,
  type Route,
  type RouteResult,
  updateProfile,
} from "./routes";

/** Largest request body the gateway reads, in bytes, unless configured. */
export const DEFAULT_MAX_BODY_BYTES = 16 * 1024;

/** Routes by path, then by HTTP method. */
const ROUTES: Record<string, Record<string, Route>> = {
  "/login": { POST: login },
  "/token/generate": { POST: generateToken },
  "/profile": { PUT: updateProfile },
};

/** Settings of the example gateway. */
export interface GatewayOptions {
  client: TypedTokenServiceClient;
  /**
   * The token service's signing secret, which PUT /profile needs only when
   * GetDefault returns no secret.
   */
  signingSecret?: Buffer;
  log: Logger;
  /** Host to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port to listen on, where 0 picks a free one. Default 0. */
  port?: number;
  /**
   * Proxies in front of the gateway whose X-Forwarded-For entries are
   * trusted. Default 0: the socket's peer address is the client IP.
   */
  trustedProxyHops?: number;
  /** Largest request body, in bytes. Default 16 KiB. */
  maxBodyBytes?: number;
}

/** A running gateway. */
export interface Gateway {
  server: Server;
  port: number;
  /** Stops accepting connections and waits for open requests to end. */
  close(): Promise<void>;
}

/** Returns the path of a request URL without its query string. */
function pathOf(request: IncomingMessage): string {
  return new URL(request.url ?? "/", "http://gateway").pathname;
}

function findRoute(request: IncomingMessage): Route {
  const path = pathOf(request);
  const methods = ROUTES[path];
  if (!methods) {
    throw new HttpError(404, "NOT_FOUND", `no route for ${path}`);
  }

  const route = methods[request.method ?? ""];
  if (!route) {
    const allowed = Object.keys(methods).join(", ");
    throw new HttpError(
      405,
      "METHOD_NOT_ALLOWED",
      `${path} accepts ${allowed} only`,
      { Allow: allowed },
    );
  }
  return route;
}

/**
 * Reads the signed-in user from X-User-Id. A real gateway takes the user id
 * from its own session instead, because any client can send this header.
 */
function readUserId(request: IncomingMessage): string {
  const userId = request.headers["x-user-id"];
  if (typeof userId !== "string") {
    throw new HttpError(
      401,
      "UNAUTHENTICATED",
      "missing X-User-Id header: send the signed-in user's id",
    );
  }
  return userId;
}

/**
 * Describes an error for the log: its name and message. The token service's
 * messages never contain a secret, and the gateway's own errors hold none.
 */
function describeError(err: unknown): Record<string, unknown> {
  if (err instanceof Error) {
    return { name: err.name, message: err.message };
  }
  return { message: String(err) };
}

/** Creates the request handler of the gateway. */
function createHandler(options: GatewayOptions) {
  const trustedProxyHops = options.trustedProxyHops ?? 0;
  const maxBodyBytes = options.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;

  const handle = async (
    request: IncomingMessage,
    id: string,
  ): Promise<RouteResult> => {
    const route = findRoute(request);
    const userId = readUserId(request);
    const body = await readJsonBody(request, maxBodyBytes);
    return route({
      client: options.client,
      signingSecret: options.signingSecret,
      userId,
      orgId: readHeader(request, "x-org-id") ?? "",
      audit: auditContext(request, id, trustedProxyHops),
      body,
    });
  };

  return (request: IncomingMessage, response: ServerResponse): void => {
    const startedAt = performance.now();
    const id = requestId(request);
    const requestLog = options.log.child({
      requestId: id,
      method: request.method,
      // The query string is left out, because a client may put a token there.
      path: pathOf(request),
    });
    const finish = (status: number, extra: Record<string, unknown> = {}) => {
      const durationMs = Math.round((performance.now() - startedAt) * 10) / 10;
      requestLog.info({ status, durationMs, ...extra }, "request finished");
    };

    handle(request, id).then(
      (result) => {
        sendJson(response, result.status, result.body, { "X-Request-Id": id });
        finish(result.status);
      },
      (err: unknown) => {
        const errorId = randomUUID();
        const mapped = errorResponse(err, errorId);
        if (mapped.status >= 500) {
          requestLog.error(
            { errorId, error: describeError(err) },
            "request failed",
          );
        }
        sendJson(response, mapped.status, mapped.body, {
          ...mapped.headers,
          "X-Request-Id": id,
        });
        finish(mapped.status, { code: mapped.body.error.code });
      },
    );
  };
}

/** Starts the gateway and resolves once it listens. */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const server = createServer(createHandler(options));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });

  const { port } = server.address() as AddressInfo;
  options.log.info({ port }, "gateway started");

  const close = () =>
    new Promise<void>((resolve, reject) => {
      server.close((err) => (err ? reject(err) : resolve()));
      server.closeIdleConnections();
    });
  return { server, port, close };
}
