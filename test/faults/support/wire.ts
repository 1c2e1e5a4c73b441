import { Client, credentials, type ServiceError } from "@grpc/grpc-js";

/** Protobuf wire types this encoder writes. */
export const WireType = {
  varint: 0,
  fixed64: 1,
  lengthDelimited: 2,
  fixed32: 5,
} as const;

/** Encodes a non-negative integer below 2^53 as a protobuf varint. */
export function encodeVarint(value: number): Buffer {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Buffer.from(bytes);
}

/** Encodes one field: its tag, then the payload of its wire type. */
export function encodeField(
  fieldNumber: number,
  wireType: number,
  payload: Buffer | number,
): Buffer {
  const tag = encodeVarint(fieldNumber * 8 + wireType);
  if (wireType === WireType.lengthDelimited) {
    const bytes = payload as Buffer;
    return Buffer.concat([tag, encodeVarint(bytes.length), bytes]);
  }
  if (wireType === WireType.varint) {
    return Buffer.concat([tag, encodeVarint(payload as number)]);
  }
  const width = wireType === WireType.fixed64 ? 8 : 4;
  const fixed = Buffer.alloc(width);
  fixed.writeUInt32LE((payload as number) >>> 0, 0);
  return Buffer.concat([tag, fixed]);
}

/** How a raw call ended: its status code and the response bytes. */
export interface RawOutcome {
  code: number;
  response?: Buffer;
  message: string;
}

/**
 * A gRPC client that sends request bytes as they are, so that a test can
 * send what no generated client would encode, such as invalid UTF-8.
 */
export class RawClient {
  private readonly client: Client;

  constructor(port: number) {
    this.client = new Client(
      `127.0.0.1:${port}`,
      credentials.createInsecure(),
      { "grpc.max_send_message_length": -1 },
    );
  }

  call(path: string, request: Buffer, timeoutMs = 10_000): Promise<RawOutcome> {
    const identity = (bytes: Buffer) => bytes;
    return new Promise((resolve) => {
      this.client.makeUnaryRequest(
        path,
        identity,
        identity,
        request,
        { deadline: Date.now() + timeoutMs },
        (err: ServiceError | null, response?: Buffer) =>
          resolve(
            err
              ? { code: err.code, message: err.details }
              : { code: 0, response, message: "" },
          ),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}
