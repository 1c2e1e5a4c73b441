import { timingSafeEqual } from "node:crypto";
import {
  type AuditContext,
  hashSecret,
  NotFoundError,
  Token,
  type TypedTokenServiceClient,
  verifyTokenSignature,
} from "../../src";
import { HttpError } from "./http-io";

/** Inputs of a route, read from the HTTP request and the gateway. */
export interface RouteContext {
  client: TypedTokenServiceClient;
  /**
   * The service's signing secret, for comparing tokens when GetDefault
   * returns no secret. Unset, such a comparison fails with a 500.
   */
  signingSecret?: Buffer;
  userId: string;
  orgId: string;
  audit: AuditContext;
  /** The parsed JSON body, or undefined when the body was empty. */
  body: unknown;
}

/** A route's JSON result. Errors are thrown, and the server maps them. */
export interface RouteResult {
  status: number;
  body: unknown;
}

export type Route = (context: RouteContext) => Promise<RouteResult>;

/** Converts a token to JSON, leaving out the secret when it is empty. */
function tokenJson(token: Token | undefined): unknown {
  return token ? Token.toJSON(token) : null;
}

/** Returns the request fields shared by the default-token RPCs. */
function ownerRequest(context: RouteContext) {
  return {
    userId: context.userId,
    orgId: context.orgId,
    audit: context.audit,
  };
}

/** POST /login: returns the valid default token, provisioning one. */
export const login: Route = async (context) => {
  const { token, provisioned } = await context.client.getOrProvision(
    ownerRequest(context),
  );
  return { status: 200, body: { token: tokenJson(token), provisioned } };
};

/** POST /token/generate: gives the default token a new secret. */
export const generateToken: Route = async (context) => {
  const { token, created } = await context.client.regenerate(
    ownerRequest(context),
  );
  return { status: 200, body: { token: tokenJson(token), created } };
};

/** Reads `token` from a PUT /profile body. */
function submittedToken(body: unknown): string {
  const token =
    typeof body === "object" && body !== null && !Array.isArray(body)
      ? (body as Record<string, unknown>).token
      : undefined;
  if (typeof token !== "string") {
    throw new HttpError(
      400,
      "INVALID_ARGUMENT",
      "the body must be a JSON object with a string field token: the " +
        "token shown on the profile page, or an empty string to delete it",
    );
  }
  return token;
}

/**
 * Checks in constant time whether `submitted` is the secret of `current`.
 * The secret is compared when the response carries it, and otherwise the
 * token's signature is checked with the signing secret.
 *
 * @throws Error when neither the secret nor the signing secret is at hand.
 */
export function isCurrentToken(
  submitted: string,
  current: Token,
  signingSecret: Buffer | undefined,
): boolean {
  if (current.secret !== "") {
    // Equal-length SHA-256 digests, because timingSafeEqual needs equal
    // lengths and the lengths of the secrets must not leak either.
    const expected = Buffer.from(hashSecret(current.secret), "hex");
    const actual = Buffer.from(hashSecret(submitted), "hex");
    return timingSafeEqual(expected, actual);
  }
  if (signingSecret === undefined) {
    throw new Error(
      "cannot compare the submitted token: GetDefault returned no secret " +
        "and the gateway has no signing secret; set TOKEN_SIGNING_SECRET",
    );
  }
  return verifyTokenSignature(submitted, current.signature, signingSecret);
}

/** Reads the current default token, or undefined when there is none. */
async function currentToken(context: RouteContext): Promise<Token | undefined> {
  try {
    const { token } = await context.client.getDefault({
      userId: context.userId,
      orgId: context.orgId,
    });
    return token;
  } catch (err) {
    if (err instanceof NotFoundError) {
      return undefined;
    }
    throw err;
  }
}

/**
 * PUT /profile: applies the token field of the profile form. The same token
 * as the current one changes nothing, another one gives the default token
 * a new secret (the submitted value is never stored), and an empty one
 * deletes the default token.
 */
export const updateProfile: Route = async (context) => {
  const submitted = submittedToken(context.body);
  if (submitted === "") {
    const { token } = await context.client.delete({
      ...ownerRequest(context),
      allowMissing: true,
    });
    const action = token ? "deleted" : "unchanged";
    return { status: 200, body: { action, token: null } };
  }

  const current = await currentToken(context);
  const unchanged =
    current !== undefined &&
    isCurrentToken(submitted, current, context.signingSecret);
  if (unchanged) {
    return {
      status: 200,
      body: { action: "unchanged", token: tokenJson(current) },
    };
  }

  const { token, created } = await context.client.regenerate(
    ownerRequest(context),
  );
  const action = created ? "created" : "regenerated";
  return { status: 200, body: { action, token: tokenJson(token) } };
};
