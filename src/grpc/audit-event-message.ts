import {
  AuditAction,
  type AuditEvent,
  AuditReason,
} from "../generated/token/v1/token_service";
import type { AuditEventRecord } from "../tokens/audit";
import { toTokenKind } from "./token-message";

const ACTIONS: Record<AuditEventRecord["action"], AuditAction> = {
  create: AuditAction.AUDIT_ACTION_CREATE,
  regenerate: AuditAction.AUDIT_ACTION_REGENERATE,
  delete: AuditAction.AUDIT_ACTION_DELETE,
};

const REASONS: Record<NonNullable<AuditEventRecord["reason"]>, AuditReason> = {
  provision: AuditReason.AUDIT_REASON_PROVISION,
  expired: AuditReason.AUDIT_REASON_EXPIRED,
  disabled: AuditReason.AUDIT_REASON_DISABLED,
};

/** Builds the AuditEvent message; events hold no secret, hash or signature. */
export function toAuditEventMessage(event: AuditEventRecord): AuditEvent {
  const gracePeriodMs = event.gracePeriodMs;
  return {
    id: event.id,
    tokenId: event.tokenId,
    action: ACTIONS[event.action] ?? AuditAction.AUDIT_ACTION_UNSPECIFIED,
    reason: event.reason
      ? REASONS[event.reason]
      : AuditReason.AUDIT_REASON_UNSPECIFIED,
    label: event.label,
    kind: toTokenKind(event.kind),
    masked: event.masked,
    rpc: event.rpc,
    clientService: event.clientService,
    requestId: event.requestId,
    actorId: event.actorId,
    clientIp: event.clientIp,
    userAgent: event.userAgent,
    createdAt: event.createdAt,
    gracePeriod:
      gracePeriodMs === null
        ? undefined
        : {
            seconds: Math.floor(gracePeriodMs / 1000),
            nanos: (gracePeriodMs % 1000) * 1_000_000,
          },
  };
}
