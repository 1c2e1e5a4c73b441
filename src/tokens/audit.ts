import type { Knex } from "knex";
import type { TokenRecord } from "./repository";

/** What a change did to a token. */
export type AuditAction = "create" | "regenerate" | "delete";

/** Why GetOrProvision or Regenerate changed a token, when it is not asked. */
export type AuditReason = "provision" | "expired" | "disabled";

/** Who asked for a change, as the gateway reported it. */
export interface AuditContext {
  requestId: string;
  actorId: string;
  clientIp: string;
  userAgent: string;
}

/** The request facts every audit event records. */
export interface AuditSource {
  /** Name of the RPC, such as `Regenerate`. */
  rpc: string;
  /** The calling service, from its certificate or call metadata. */
  clientService: string;
  audit: AuditContext;
}

/**
 * Writes one audit event in the transaction that made the change. The event
 * holds the masked secret only, never the secret, its hash or signature.
 */
export async function recordAuditEvent(
  trx: Knex.Transaction,
  source: AuditSource,
  token: TokenRecord,
  action: AuditAction,
  reason: AuditReason | null = null,
): Promise<void> {
  await trx("api_token_events").insert({
    token_id: token.id,
    user_id: token.userId,
    org_id: token.orgId,
    action,
    reason,
    label: token.label,
    kind: token.kind,
    masked: token.masked,
    rpc: source.rpc,
    client_service: source.clientService,
    request_id: source.audit.requestId,
    actor_id: source.audit.actorId,
    client_ip: source.audit.clientIp,
    user_agent: source.audit.userAgent,
    created_at: trx.fn.now(),
  });
}
