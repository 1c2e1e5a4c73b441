import { setTimeout as sleep } from "node:timers/promises";
import type { Knex } from "knex";

/**
 * Polls `check` until it returns true, for liveness only: the bound is
 * generous because the machine may be shared and slow.
 *
 * @throws Error naming `what` when the bound passes first.
 */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 20_000,
): Promise<void> {
  const giveUpAt = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > giveUpAt) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(20);
  }
}

/** A row lock taken by a transaction outside the service. */
export interface HeldLock {
  release(): Promise<void>;
}

/** Locks a token row with SELECT ... FOR UPDATE until released. */
export async function lockTokenRow(
  db: Knex,
  tokenId: string,
): Promise<HeldLock> {
  const trx = await db.transaction();
  await trx.raw("select id from api_tokens where id = ? for update", [tokenId]);
  return { release: async () => void (await trx.commit()) };
}

/** Counts sessions of the service on a database that wait for a lock. */
export async function lockWaiters(db: Knex, database: string): Promise<number> {
  const { rows } = await db.raw(
    `select count(*)::int as n from pg_stat_activity
     where datname = ? and application_name = 'token-service'
       and wait_event_type = 'Lock'`,
    [database],
  );
  return rows[0].n;
}

/**
 * Waits up to `timeoutMs` for the service's sessions to stop waiting for
 * locks, then releases the test's lock whatever happened, so that a failed
 * wait leaves nothing blocked. Returns the sessions still waiting just
 * before the release.
 */
export async function waitersBeforeRelease(
  db: Knex,
  database: string,
  release: () => Promise<void>,
  timeoutMs = 5000,
): Promise<number> {
  try {
    await waitFor(
      "the service to stop waiting for the lock",
      async () => (await lockWaiters(db, database)) === 0,
      timeoutMs,
    ).catch(() => undefined);
    return await lockWaiters(db, database);
  } finally {
    await release();
  }
}
