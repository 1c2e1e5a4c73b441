import type { IncomingMessage, ServerResponse } from "node:http";

/** A request the gateway rejects before calling the token service. */
export class HttpError extends Error {
  override name = "HttpError";

  constructor(
    /** HTTP status code. */
    readonly status: number,
    /** Machine-readable error code, such as `INVALID_JSON`. */
    readonly code: string,
    message: string,
    /** Extra response headers, such as `Allow`. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** Checks that a Content-Type header names JSON, ignoring parameters. */
function isJsonContentType(contentType: string | undefined): boolean {
  const mediaType = (contentType ?? "").split(";")[0].trim().toLowerCase();
  return mediaType === "application/json";
}

function tooLarge(maxBytes: number): HttpError {
  return new HttpError(
    413,
    "BODY_TOO_LARGE",
    `the request body is larger than ${maxBytes} bytes; send a smaller one`,
    { Connection: "close" },
  );
}

/** Reads the raw body, rejecting it once it passes `maxBytes`. */
function readBody(request: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(request.headers["content-length"]);
  if (Number.isFinite(declared) && declared > maxBytes) {
    request.resume();
    return Promise.reject(tooLarge(maxBytes));
  }

  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let rejected = false;
    request.on("data", (chunk: Buffer) => {
      if (rejected) {
        return;
      }
      received += chunk.length;
      if (received > maxBytes) {
        rejected = true;
        chunks.length = 0;
        reject(tooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    });
    request.on("end", () => resolve(Buffer.concat(chunks)));
    request.on("error", reject);
  });
}

/**
 * Reads a JSON request body of at most `maxBytes`. Returns undefined for an
 * empty body.
 *
 * @throws HttpError 413 for a larger body, 415 for a body that is not
 *   declared as JSON, and 400 for malformed JSON.
 */
export async function readJsonBody(
  request: IncomingMessage,
  maxBytes: number,
): Promise<unknown> {
  const body = await readBody(request, maxBytes);
  if (body.length === 0) {
    return undefined;
  }
  if (!isJsonContentType(request.headers["content-type"])) {
    throw new HttpError(
      415,
      "UNSUPPORTED_MEDIA_TYPE",
      "the request body must be JSON: send Content-Type: application/json",
    );
  }

  try {
    return JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpError(
      400,
      "INVALID_JSON",
      "the request body is not valid JSON",
    );
  }
}

/** Writes a JSON response with the given status and headers. */
export function sendJson(
  response: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const payload = JSON.stringify(body);
  response.writeHead(status, {
    ...headers,
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": Buffer.byteLength(payload),
    "Cache-Control": "no-store",
  });
  response.end(payload);
}
