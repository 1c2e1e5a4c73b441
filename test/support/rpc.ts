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
