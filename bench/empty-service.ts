import type { MethodDefinition } from "@grpc/grpc-js";

function passThrough(value: Buffer): Buffer {
  return value;
}

/**
 * A unary method whose request and response are empty messages, sent as
 * raw bytes so that no protobuf code runs: the floor of any unary call.
 */
export const EMPTY_METHOD: MethodDefinition<Buffer, Buffer> = {
  path: "/bench.v1.Empty/Call",
  requestStream: false,
  responseStream: false,
  requestSerialize: passThrough,
  requestDeserialize: passThrough,
  responseSerialize: passThrough,
  responseDeserialize: passThrough,
};
