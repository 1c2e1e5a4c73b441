import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { isIP } from "node:net";
import type { AuditContext } from "../../src";

/**
 * Longest User-Agent the token service accepts, in characters. A longer
 * header is cut to this length so that the request does not fail.
 */
const MAX_USER_AGENT_LENGTH = 1024;

/** Returns a header's value, joining repeated headers as Node.js does. */
export function readHeader(
  request: IncomingMessage,
  name: string,
): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

/** Writes an IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) as plain IPv4. */
function normalizeAddress(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return mapped ? mapped[1] : address;
}

/**
 * Finds the end client's IP address. With `trustedProxyHops` set to N, the
 * last N hops (the socket peer and the X-Forwarded-For entries it and the
 * other trusted proxies appended) are proxies, and the address before them
 * is the client's. Entries further left are ignored, because the client
 * itself can write them. Returns an empty string when the address is not a
 * valid IP address.
 */
export function clientIp(
  request: IncomingMessage,
  trustedProxyHops: number,
): string {
  const hops = (readHeader(request, "x-forwarded-for") ?? "")
    .split(",")
    .map((entry) => entry.trim())
    .filter((entry) => entry !== "");
  hops.push(request.socket.remoteAddress ?? "");

  const trusted = trustedProxyHops > 0 ? trustedProxyHops : 0;
  const index = Math.max(hops.length - 1 - trusted, 0);
  const address = normalizeAddress(hops[index]);
  return isIP(address) === 0 ? "" : address;
}

/** Returns the request id from X-Request-Id, or a new UUID when missing. */
export function requestId(request: IncomingMessage): string {
  const value = readHeader(request, "x-request-id");
  return value === undefined || value === "" ? randomUUID() : value;
}

/** Builds the AuditContext the token service stores for this request. */
export function auditContext(
  request: IncomingMessage,
  id: string,
  trustedProxyHops: number,
): AuditContext {
  const userAgent = readHeader(request, "user-agent") ?? "";
  return {
    requestId: id,
    actorId: "",
    clientIp: clientIp(request, trustedProxyHops),
    userAgent: [...userAgent].slice(0, MAX_USER_AGENT_LENGTH).join(""),
  };
}
