import type { CallOptions } from "@grpc/grpc-js";
import type { Knex } from "knex";
import type {
  DeleteRequest,
  GetOrProvisionRequest,
  RegenerateRequest,
  TokenServiceClient,
} from "../../../src/generated/token/v1/token_service";
import { call } from "../../support/service";

/** Wraps the four RPCs of a client as promise-returning functions. */
export function tokenRpcs(client: TokenServiceClient) {
  return {
    createDefault: (
      request: GetOrProvisionRequest,
      options?: Partial<CallOptions>,
    ) => call(client, client.createDefault, request, options),
    regenerate: (request: RegenerateRequest, options?: Partial<CallOptions>) =>
      call(client, client.regenerate, request, options),
    getOrProvision: (
      request: GetOrProvisionRequest,
      options?: Partial<CallOptions>,
    ) => call(client, client.getOrProvision, request, options),
    delete: (request: DeleteRequest, options?: Partial<CallOptions>) =>
      call(client, client.delete, request, options),
  };
}

/** Counts token rows and audit events, of one user or of the database. */
export async function countStored(
  db: Knex,
  userId?: string,
): Promise<{ tokens: number; events: number }> {
  const scope = userId === undefined ? {} : { user_id: userId };
  const [tokens] = await db("api_tokens").where(scope).count({ n: "*" });
  const [events] = await db("api_token_events").where(scope).count({ n: "*" });
  return { tokens: Number(tokens.n), events: Number(events.n) };
}

/**
 * Lists default tokens that break the audit trail: rows with no `create`
 * event, or whose last event does not carry the row's masked secret.
 */
export async function unauditedTokens(db: Knex): Promise<string[]> {
  const { rows } = await db.raw(`
    select t.id
    from api_tokens t
    where t.kind = 'default'
      and (
        not exists (
          select 1 from api_token_events e
          where e.token_id = t.id and e.action = 'create'
        )
        or t.secret_masked is distinct from (
          select e.masked from api_token_events e
          where e.token_id = t.id
          order by e.id desc
          limit 1
        )
      )
  `);
  return rows.map((row: { id: string }) => row.id);
}

/** Name of the database in a connection URL. */
export function databaseName(url: string): string {
  return new URL(url).pathname.slice(1);
}
