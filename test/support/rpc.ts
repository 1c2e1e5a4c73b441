import { Metadata } from "@grpc/grpc-js";
import {
  CreateDefaultRequest,
  DeleteRequest,
  GetDefaultRequest,
  GetOrProvisionRequest,
  ListAuditEventsRequest,
  RegenerateRequest,
  ValidateTokenRequest,
} from "../../src/generated/token/v1/token_service";
import { call, type TestService } from "./service";

/** Names the calling service in the call metadata. */
export function clientServiceMetadata(name: string): Metadata {
  const metadata = new Metadata();
  metadata.set("x-client-service", name);
  return metadata;
}

/**
 * Typed calls of every TokenService method; each request is filled with
 * the message's defaults, so tests set only the fields they care about.
 */
export function rpcsOf(service: TestService) {
  const { client } = service;
  return {
    createDefault: (
      request: Partial<CreateDefaultRequest>,
      metadata?: Metadata,
    ) =>
      call(
        client,
        client.createDefault,
        CreateDefaultRequest.fromPartial(request),
        {},
        metadata,
      ),
    regenerate: (request: Partial<RegenerateRequest>, metadata?: Metadata) =>
      call(
        client,
        client.regenerate,
        RegenerateRequest.fromPartial(request),
        {},
        metadata,
      ),
    getOrProvision: (request: Partial<GetOrProvisionRequest>) =>
      call(
        client,
        client.getOrProvision,
        GetOrProvisionRequest.fromPartial(request),
      ),
    delete: (request: Partial<DeleteRequest>) =>
      call(client, client.delete, DeleteRequest.fromPartial(request)),
    getDefault: (request: Partial<GetDefaultRequest>) =>
      call(client, client.getDefault, GetDefaultRequest.fromPartial(request)),
    validateToken: (secret: string) =>
      call(
        client,
        client.validateToken,
        ValidateTokenRequest.fromPartial({ secret }),
      ),
    listAuditEvents: (request: Partial<ListAuditEventsRequest>) =>
      call(
        client,
        client.listAuditEvents,
        ListAuditEventsRequest.fromPartial(request),
      ),
  };
}

/** SQL of the health probe, which runs on a timer beside the calls. */
const HEALTH_PROBE_SQL = "select 1";

/**
 * Records the SQL that the service's own pool sends while `work` runs,
 * leaving out the health probe.
 */
export async function recordQueries(
  service: TestService,
  work: () => Promise<unknown>,
): Promise<string[]> {
  const queries: string[] = [];
  const onQuery = (query: { sql: string }) => {
    if (query.sql !== HEALTH_PROBE_SQL) {
      queries.push(query.sql);
    }
  };

  service.app.db.on("query", onQuery);
  try {
    await work();
  } finally {
    service.app.db.off("query", onQuery);
  }
  return queries;
}
