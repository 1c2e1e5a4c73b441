import fs from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import type * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import descriptor from "protobufjs/ext/descriptor";
import {
  HealthImplementation,
  protoPath as healthProtoPath,
} from "grpc-health-check";
import type { TlsSettings } from "../config";
import { withStrictDecoding } from "./decoding";
import {
  TokenServiceService,
  type TokenServiceServer,
} from "../generated/token/v1/token_service";

/** Folder of the service's .proto files, beside src/ and dist/. */
export const PROTO_DIR = path.resolve(__dirname, "..", "..", "proto");

/** grpc-js's own default message limit, which the server keeps as a cap. */
const TRANSPORT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Full name of the service, as health checks and reflection know it. */
export const TOKEN_SERVICE_NAME = "token.v1.TokenService";

/**
 * Files of the descriptor sets that `npm run generate` builds with buf. They
 * hold fully qualified type names and every imported file, the well-known
 * types included, which grpcurl needs to resolve google.protobuf.Timestamp.
 * Descriptors that @grpc/proto-loader derives lack both.
 */
const DESCRIPTOR_SETS = [
  "token_service.binpb",
  "health.binpb",
  // google.rpc.Status and its details, so that grpcurl can decode the
  // `grpc-status-details-bin` trailer of an error.
  "google_rpc.binpb",
];

/**
 * grpc-health-check ships health.proto as `health/v1/health.proto`; clients
 * ask reflection for its standard name. No other file imports it, so the
 * rename breaks no dependency.
 */
const FILE_RENAMES: Record<string, string> = {
  "health/v1/health.proto": "grpc/health/v1/health.proto",
};

/**
 * Loads the descriptors that server reflection serves, so `grpcurl list`
 * and `describe` work with no .proto files at hand. ReflectionService reads
 * only the `fileDescriptorProtos` of each entry, so one entry carries them
 * all.
 */
function loadReflectionDescriptors(): protoLoader.PackageDefinition {
  const files = DESCRIPTOR_SETS.flatMap((name) => {
    const bytes = fs.readFileSync(path.join(PROTO_DIR, "descriptors", name));
    const set = descriptor.FileDescriptorSet.decode(bytes) as unknown as {
      file: { name: string }[];
    };
    return set.file.map((file) => {
      file.name = FILE_RENAMES[file.name] ?? file.name;
      return descriptor.FileDescriptorProto.encode(file).finish();
    });
  });

  const entry = { fileDescriptorProtos: files };
  return { descriptors: entry } as unknown as protoLoader.PackageDefinition;
}

/** The gRPC server with its health service. */
export interface GrpcServer {
  server: grpc.Server;
  health: HealthImplementation;
  /** Ends every open health Watch stream with status OK. */
  endHealthWatches(): void;
}

/**
 * Adds the health service to the server and keeps its open Watch streams,
 * which HealthImplementation does not expose, so that a shutdown can end
 * them.
 */
function addHealthService(
  server: grpc.Server,
  health: HealthImplementation,
): () => void {
  const watches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  health.addToServer({
    addService: (definition, implementation) => {
      const watch = implementation.watch as grpc.handleServerStreamingCall<
        unknown,
        unknown
      >;
      server.addService(definition, {
        ...implementation,
        watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
          watches.add(call);
          call.on("cancelled", () => watches.delete(call));
          watch(call);
        },
      });
    },
  });

  return () => {
    for (const call of watches) {
      call.end();
    }
    watches.clear();
  };
}

/** Creates the server with TokenService, health checking and reflection. */
export function createGrpcServer(
  handlers: TokenServiceServer,
  maxMessageBytes: number,
): GrpcServer {
  // grpc-js rejects a message over its own limit before any handler or log
  // receives it, so its limit only caps memory. The deserializer enforces
  // maxMessageBytes with a clear message and a log line.
  const server = new grpc.Server({
    "grpc.max_receive_message_length": Math.max(
      maxMessageBytes,
      TRANSPORT_MAX_MESSAGE_BYTES,
    ),
    "grpc.max_send_message_length": Math.max(
      maxMessageBytes,
      TRANSPORT_MAX_MESSAGE_BYTES,
    ),
  });
  server.addService(
    withStrictDecoding(TokenServiceService, maxMessageBytes),
    handlers,
  );

  const health = new HealthImplementation({
    "": "NOT_SERVING",
    [TOKEN_SERVICE_NAME]: "NOT_SERVING",
  });
  const endHealthWatches = addHealthService(server, health);

  new ReflectionService(loadReflectionDescriptors()).addToServer(server);
  return { server, health, endHealthWatches };
}

/**
 * Builds the server credentials: plaintext without TLS settings, TLS with
 * them, and mutual TLS that requires a client certificate signed by the
 * client CA when one is set.
 */
export function createServerCredentials(
  tls: TlsSettings | undefined,
): grpc.ServerCredentials {
  if (!tls) {
    return grpc.ServerCredentials.createInsecure();
  }

  const clientCa = tls.clientCaFile ? fs.readFileSync(tls.clientCaFile) : null;
  const keyPair = {
    cert_chain: fs.readFileSync(tls.certFile),
    private_key: fs.readFileSync(tls.keyFile),
  };
  return grpc.ServerCredentials.createSsl(
    clientCa,
    [keyPair],
    clientCa !== null,
  );
}

/** Binds the server to host:port and returns the bound port. */
export function bindServer(
  server: grpc.Server,
  address: string,
  credentials: grpc.ServerCredentials,
): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(address, credentials, (err, port) => {
      if (err) {
        reject(err);
      } else {
        resolve(port);
      }
    });
  });
}
