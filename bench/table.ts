import { createHash } from "node:crypto";

/**
 * The rows of one bench database. User ids are the decimal numbers 1 to
 * `rows`, each with one valid default token in organization "". Every
 * `stride`-th user, `benchUsers` in all, has a secret sealed with the
 * service's key, so GetOrProvision can return it. The other rows have
 * valid hashes but filler ciphertexts.
 */
export interface TableShape {
  rows: number;
  benchUsers: number;
}

/** The organization of every bench token. */
export const BENCH_ORG_ID = "";

/** Distance between two sealed users, in user numbers. */
export function strideOf(table: TableShape): number {
  return Math.max(1, Math.floor(table.rows / table.benchUsers));
}

/** Returns the user number of the k-th sealed user, k from 0. */
export function sealedUserNumber(table: TableShape, k: number): number {
  return 1 + k * strideOf(table);
}

/**
 * Returns the secret of user number `n`. The seed step computes the same
 * value in SQL, so any row's secret is known without storing it.
 */
export function benchSecret(n: number): string {
  const digest = createHash("sha256").update(`token-service-bench:${n}`);
  return "vtk_" + digest.digest("base64url");
}

/**
 * Users whose secrets bench/bare-server.ts maps to a response. The
 * cache-hit run uses the first 100.
 */
export const BARE_SERVER_USERS = 10_000;

/** Formats a row count as 10k or 1M. */
export function formatRows(rows: number): string {
  if (rows >= 1_000_000 && rows % 1_000_000 === 0) {
    return `${rows / 1_000_000}M`;
  }
  if (rows >= 1000 && rows % 1000 === 0) {
    return `${rows / 1000}k`;
  }
  return String(rows);
}
