import type { ServiceDefinition } from "@grpc/grpc-js";
import { BinaryReader } from "@bufbuild/protobuf/wire";

/**
 * A request whose bytes failed to decode. grpc-js turns a throwing
 * deserializer into a bare INTERNAL status that never reaches a handler, so
 * the deserializer returns this instead. The call wrapper then rejects it as
 * INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for its size, and logs the call.
 */
export class MalformedRequest {
  constructor(
    readonly reason: string,
    /** Whether the request was rejected for its size alone. */
    readonly oversized = false,
  ) {}
}

class InvalidUtf8Error extends Error {
  override name = "InvalidUtf8Error";
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function decodeUtf8Strictly(bytes: Uint8Array): string {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    throw new InvalidUtf8Error();
  }
}

// ts-proto decodes int64 fields to numbers and throws this when a value
// does not fit in one exactly.
const UNSAFE_INTEGER_MESSAGE = /Number\.(MAX|MIN)_SAFE_INTEGER/;

/** Describes why request bytes failed to decode, and what to send. */
function describeDecodeError(err: unknown): string {
  if (err instanceof InvalidUtf8Error) {
    return "a string field is not valid UTF-8";
  }
  if (err instanceof Error && UNSAFE_INTEGER_MESSAGE.test(err.message)) {
    return (
      "a 64-bit integer field, such as grace_period.seconds, is beyond " +
      "±9007199254740991; send a value in that range"
    );
  }
  return "the bytes are not a valid protobuf encoding of the request";
}

/**
 * Returns a copy of a service definition whose request deserializers reject
 * invalid UTF-8, which the default decoder replaces with U+FFFD, and
 * requests over `maxMessageBytes`, returning a MalformedRequest in place of
 * throwing.
 */
export function withStrictDecoding<T extends ServiceDefinition>(
  definition: T,
  maxMessageBytes: number,
): T {
  const methods = Object.entries(definition).map(([name, method]) => {
    const requestDeserialize = (value: Buffer): unknown => {
      if (value.length > maxMessageBytes) {
        return new MalformedRequest(
          `the request is ${value.length} bytes; the maximum is ` +
            `${maxMessageBytes} (GRPC_MAX_MESSAGE_BYTES)`,
          true,
        );
      }
      try {
        // ts-proto's decode takes a BinaryReader as well as bytes, and this
        // reader's UTF-8 decoder throws where the default one substitutes.
        const reader = new BinaryReader(value, decodeUtf8Strictly);
        return method.requestDeserialize(reader as unknown as Buffer);
      } catch (err) {
        return new MalformedRequest(describeDecodeError(err));
      }
    };
    return [name, { ...method, requestDeserialize }];
  });
  return Object.fromEntries(methods) as T;
}
