import type { MethodDefinition } from "@grpc/grpc-js";
import { TokenServiceService } from "../src/generated/token/v1/token_service";
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
  },
  {
    name: "ValidateToken, cache hit",
    method: "validateToken",
    request: (sequence) => ({
      secret: benchSecret(1 + (sequence % HOT_SECRETS)),
    }),
  },
  {
    // A secret not presented before, until the run has walked every row.
    name: "ValidateToken, cache miss",
    method: "validateToken",
    request: (sequence, table) => ({
      secret: benchSecret(1 + ((sequence * SCATTER_STEP) % table.rows)),
    }),
    repeatsAfter: (table) => table.rows,
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
