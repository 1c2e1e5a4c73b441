// TODO: delete this file once GetDefault is in the generated code, and
// switch the `getDefault` entry of UNARY_METHODS in client.ts to the
// generated definition and GetDefaultRequest. Until then this adapter
// encodes the two messages by hand from their field numbers, so the client
// can call the RPC on a server that has it. A server without it answers
// UNIMPLEMENTED.
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { Token } from "../generated/token/v1/token_service";

/**
 * Request for the default token without its secret, as the contract
 * defines it: `string user_id = 1; string org_id = 2;`.
 */
export interface GetDefaultRequest {
  userId: string;
  orgId: string;
}

/**
 * The default token, as the contract defines it: `Token token = 1;`. The
 * service answers NOT_FOUND when the user has no default token.
 */
export interface GetDefaultResponse {
  token: Token | undefined;
}

/** Fills the unset fields of a request, as ts-proto's fromPartial does. */
export const GetDefaultRequest = {
  fromPartial(object: Partial<GetDefaultRequest>): GetDefaultRequest {
    return { userId: object.userId ?? "", orgId: object.orgId ?? "" };
  },
};

const LENGTH_DELIMITED = 2;

function encodeRequest(request: GetDefaultRequest): Buffer {
  const writer = new BinaryWriter();
  if (request.userId !== "") {
    writer.uint32((1 << 3) | LENGTH_DELIMITED).string(request.userId);
  }
  if (request.orgId !== "") {
    writer.uint32((2 << 3) | LENGTH_DELIMITED).string(request.orgId);
  }
  return Buffer.from(writer.finish());
}

function decodeResponse(bytes: Buffer): GetDefaultResponse {
  const reader = new BinaryReader(bytes);
  const response: GetDefaultResponse = { token: undefined };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag === ((1 << 3) | LENGTH_DELIMITED)) {
      response.token = Token.decode(reader, reader.uint32());
    } else {
      reader.skip(tag & 7);
    }
  }
  return response;
}

/** The GetDefault method definition, in the shape ts-proto generates. */
export const getDefaultMethod = {
  path: "/token.v1.TokenService/GetDefault",
  requestStream: false,
  responseStream: false,
  requestSerialize: encodeRequest,
  responseDeserialize: decodeResponse,
} as const;
