import type { ServiceError } from "@grpc/grpc-js";
import type { Knex } from "knex";
import {
  BadRequest,
  ErrorInfo,
  ResourceInfo,
} from "../../src/generated/google/rpc/error_details";
import { Status } from "../../src/generated/google/rpc/status";

/** Decodes the google.rpc.Status in an error's trailer, if any. */
export function statusDetails(err: ServiceError): Status | undefined {
  const [raw] = err.metadata?.get("grpc-status-details-bin") ?? [];
  return raw ? Status.decode(raw as Buffer) : undefined;
}

/** Returns the field names of the BadRequest detail of an error. */
export function violatedFields(err: ServiceError): string[] {
  const details = statusDetails(err)?.details ?? [];
  const any = details.find((d) => d.typeUrl.endsWith("google.rpc.BadRequest"));
  return any
    ? BadRequest.decode(any.value).fieldViolations.map((v) => v.field)
    : [];
}

/** Returns the ResourceInfo and ErrorInfo details of an error. */
export function resourceDetails(err: ServiceError): {
  resource?: ResourceInfo;
  info?: ErrorInfo;
} {
  const details = statusDetails(err)?.details ?? [];
  const resource = details.find((d) =>
    d.typeUrl.endsWith("google.rpc.ResourceInfo"),
  );
  const info = details.find((d) => d.typeUrl.endsWith("google.rpc.ErrorInfo"));
  return {
    resource: resource ? ResourceInfo.decode(resource.value) : undefined,
    info: info ? ErrorInfo.decode(info.value) : undefined,
  };
}

/** A row of api_token_events, as the tests read it. */
export interface EventRow {
  id: string;
  token_id: string;
  user_id: string;
  org_id: string;
  action: string;
  reason: string | null;
  label: string;
  kind: string;
  masked: string;
  rpc: string;
  client_service: string;
  request_id: string;
  actor_id: string;
  client_ip: string;
  user_agent: string;
}

/** Reads the audit events of a user, oldest first. */
export function eventsOf(db: Knex, userId: string): Promise<EventRow[]> {
  return db("api_token_events").where({ user_id: userId }).orderBy("id");
}

/** Reads the token rows of a user. */
export function tokensOf(
  db: Knex,
  userId: string,
): Promise<Record<string, any>[]> {
  return db("api_tokens").where({ user_id: userId }).orderBy("created_at");
}
