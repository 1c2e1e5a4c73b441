import type { Knex } from "knex";
import { type PreparedStatement, runPrepared } from "../db/prepared";
import type {
  Queryable,
  TokenKind,
  TokenOwner,
  TokenRecord,
} from "./repository";

/** Kind of change made to a token. */
export type AuditAction = "create" | "regenerate" | "delete";

/** Reason GetOrProvision or Regenerate changed a token unasked. */
export type AuditReason = "provision" | "expired" | "disabled";

/** Requester of a change, as the gateway reported it. */
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

/** A stored audit event, as ListAuditEvents returns it. */
export interface AuditEventRecord {
  /** bigint id as a decimal string, because pg returns int8 as text. */
  id: string;
  tokenId: string;
  action: AuditAction;
  reason: AuditReason | null;
  label: string;
  kind: TokenKind;
  masked: string;
  rpc: string;
  clientService: string;
  requestId: string;
  actorId: string;
  clientIp: string;
  userAgent: string;
  createdAt: Date;
  /** Grace period of the previous secret in ms; null when none applied. */
  gracePeriodMs: number | null;
}

const INSERT_AUDIT_EVENT: PreparedStatement = {
  name: "token_service_insert_audit_event",
  sql:
    "insert into api_token_events (token_id, user_id, org_id, action, " +
    "reason, label, kind, masked, rpc, client_service, request_id, " +
    "actor_id, client_ip, user_agent, grace_period_ms, created_at) " +
    "values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())",
};

/**
 * Writes one audit event in the transaction that made the change. The event
 * contains the masked secret only, never the secret, its hash or signature.
 * `gracePeriodMs` is the time the replaced secret keeps validating, for a
 * rotation that applied one.
 */
export async function recordAuditEvent(
  trx: Knex.Transaction,
  source: AuditSource,
  token: TokenRecord,
  action: AuditAction,
  reason: AuditReason | null = null,
  gracePeriodMs: number | null = null,
): Promise<void> {
  await runPrepared(trx, INSERT_AUDIT_EVENT, [
    token.id,
    token.userId,
    token.orgId,
    action,
    reason,
    token.label,
    token.kind,
    token.masked,
    source.rpc,
    source.clientService,
    source.audit.requestId,
    source.audit.actorId,
    source.audit.clientIp,
    source.audit.userAgent,
    gracePeriodMs,
  ]);
}

/**
 * Reads up to `limit` audit events of an owner, newest first, with ids
 * below `beforeId` when it is set.
 */
export async function findAuditEvents(
  db: Queryable,
  owner: TokenOwner,
  beforeId: string | undefined,
  limit: number,
): Promise<AuditEventRecord[]> {
  const query = db("api_token_events")
    .where({ user_id: owner.userId, org_id: owner.orgId })
    .orderBy("id", "desc")
    .limit(limit);
  if (beforeId !== undefined) {
    query.andWhere("id", "<", beforeId);
  }

  const rows = await query;
  return rows.map((row) => ({
    id: String(row.id),
    tokenId: row.token_id,
    action: row.action,
    reason: row.reason,
    label: row.label,
    kind: row.kind,
    masked: row.masked,
    rpc: row.rpc,
    clientService: row.client_service,
    requestId: row.request_id,
    actorId: row.actor_id,
    clientIp: row.client_ip,
    userAgent: row.user_agent,
    createdAt: row.created_at,
    gracePeriodMs: row.grace_period_ms,
  }));
}
