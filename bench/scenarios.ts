import type { MethodDefinition } from "@grpc/grpc-js";
import {
  type GetOrProvisionResponse,
  type RegenerateResponse,
  TokenServiceService,
  type ValidateTokenResponse,
  ValidationResult,
} from "../src/generated/token/v1/token_service";
import {
  BENCH_ORG_ID,
  benchSecret,
  sealedUserNumber,
  type TableShape,
} from "./table";

/** A workload of calls to one TokenService RPC. */
export interface Scenario {
  name: string;
  /** Property of the RPC in the generated TokenServiceService. */
  method: string;
  /** Builds the request of the call with this sequence number. */
  request(sequence: number, table: TableShape): object;
  /** Calls after which requests repeat, for a scenario that needs them new. */
  repeatsAfter?(table: TableShape): number;
  /**
   * Checks the response to the call with this sequence number. A throw
   * counts the call as an error, so a broken path cannot pass for a fast one.
   */
  check(response: object, sequence: number, table: TableShape): void;
}

/** Raises when a response field differs from what the bench expects. */
function expectField(name: string, actual: unknown, expected: unknown): void {
  if (actual !== expected) {
    throw new Error(
      `unexpected ${name}: ${JSON.stringify(actual)}, expected ` +
        JSON.stringify(expected),
    );
  }
}

/** Checks that a ValidateToken response accepts the secret of a user. */
function expectValid(response: object, userNumber: number): void {
  const validation = response as ValidateTokenResponse;
  expectField(
    "ValidateToken result",
    validation.result,
    ValidationResult.VALIDATION_RESULT_VALID,
  );
  expectField("ValidateToken user_id", validation.userId, String(userNumber));
}

/** Returns the user whose secret the cache-miss run presents in a call. */
function missUserNumber(sequence: number, table: TableShape): number {
  return 1 + ((sequence * SCATTER_STEP) % table.rows);
}

/** Returns the user that the Regenerate run rotates in a call. */
function regeneratedUser(sequence: number, table: TableShape): string {
  return `bench-regenerate-${sequence % table.benchUsers}`;
}

/** Secrets a cache-hit run cycles through; they are all cached after warm-up. */
const HOT_SECRETS = 100;

/**
 * A prime larger than any table, so that sequence * STEP mod rows walks
 * every row once, in scattered order, before it repeats.
 */
const SCATTER_STEP = 1_000_003;

function auditContext(sequence: number) {
  return {
    requestId: `bench-${sequence}`,
    actorId: "",
    clientIp: "127.0.0.1",
    userAgent: "token-service-bench",
  };
}

/** Every scenario of the bench, run in this order. */
export const SCENARIOS: Scenario[] = [
  {
    // Login of a user who already has a valid token: the common case.
    name: "GetOrProvision, existing token",
    method: "getOrProvision",
    request: (sequence, table) => ({
      userId: String(sealedUserNumber(table, sequence % table.benchUsers)),
      orgId: BENCH_ORG_ID,
      audit: auditContext(sequence),
    }),
    check: (response, sequence, table) => {
      const { token, provisioned } = response as GetOrProvisionResponse;
      const user = sealedUserNumber(table, sequence % table.benchUsers);
      expectField("GetOrProvision provisioned", provisioned, false);
      expectField("GetOrProvision secret", token?.secret, benchSecret(user));
    },
  },
  {
    name: "ValidateToken, cache hit",
    method: "validateToken",
    request: (sequence) => ({
      secret: benchSecret(1 + (sequence % HOT_SECRETS)),
    }),
    check: (response, sequence) =>
      expectValid(response, 1 + (sequence % HOT_SECRETS)),
  },
  {
    // A secret not presented before, until the run has walked every row.
    name: "ValidateToken, cache miss",
    method: "validateToken",
    request: (sequence, table) => ({
      secret: benchSecret(missUserNumber(sequence, table)),
    }),
    repeatsAfter: (table) => table.rows,
    check: (response, sequence, table) =>
      expectValid(response, missUserNumber(sequence, table)),
  },
  {
    // Rotation of users of their own: the warm-up creates their tokens, so
    // the measured window rotates existing ones. It runs last, and touches
    // no user that another workload reads.
    name: "Regenerate, existing token",
    method: "regenerate",
    request: (sequence, table) => ({
      userId: regeneratedUser(sequence, table),
      orgId: BENCH_ORG_ID,
      audit: auditContext(sequence),
    }),
    check: (response, sequence, table) => {
      const { token } = response as RegenerateResponse;
      expectField(
        "Regenerate user_id",
        token?.userId,
        regeneratedUser(sequence, table),
      );
      expectField(
        "Regenerate secret prefix",
        token?.secret.slice(0, 4),
        "vtk_",
      );
    },
  },
];

/**
 * Returns the method definition of a TokenService RPC, or undefined when
 * the generated client has no such RPC.
 */
export function findMethod(
  method: string,
): MethodDefinition<object, object> | undefined {
  const methods = TokenServiceService as unknown as Record<
    string,
    MethodDefinition<object, object> | undefined
  >;
  return Object.hasOwn(methods, method) ? methods[method] : undefined;
}
