import type { Knex } from "knex";

/**
 * Installs a trigger in a test database that disturbs the audit insert of
 * chosen users. For a user with a planned SQLSTATE, the first N inserts
 * raise a real PostgreSQL error with it. For a user with a planned advisory
 * lock, every insert takes that lock first, so that a test can build a real
 * deadlock. The attempt counter is a sequence because nextval survives the
 * rollback of the failing transaction.
 */
export async function installPlannedFaults(db: Knex): Promise<void> {
  await db.raw(`
    create table test_fault_plan (
      user_id text primary key,
      sqlstate text,
      failures int not null default 0,
      advisory_lock bigint
    );
    create sequence test_fault_attempts;
    create function test_planned_fault() returns trigger
    language plpgsql as $$
    declare
      plan test_fault_plan;
    begin
      select * into plan from test_fault_plan where user_id = new.user_id;
      if not found then
        return new;
      end if;
      if plan.advisory_lock is not null then
        perform pg_advisory_xact_lock(plan.advisory_lock);
      end if;
      if plan.sqlstate is not null
        and nextval('test_fault_attempts') <= plan.failures then
        raise exception 'planned fault for a test'
          using errcode = plan.sqlstate;
      end if;
      return new;
    end
    $$;
    create trigger test_planned_fault
      before insert on api_token_events
      for each row execute function test_planned_fault();
  `);
}

/** Makes the next `failures` audit inserts of a user raise `sqlstate`. */
export async function planFailures(
  db: Knex,
  userId: string,
  sqlstate: string,
  failures: number,
): Promise<void> {
  await db.raw("select setval('test_fault_attempts', 1, false)");
  await db("test_fault_plan").insert({ user_id: userId, sqlstate, failures });
}

/** Makes every audit insert of a user take advisory lock `key` first. */
export async function planAdvisoryLock(
  db: Knex,
  userId: string,
  key: number,
): Promise<void> {
  await db("test_fault_plan").insert({ user_id: userId, advisory_lock: key });
}
