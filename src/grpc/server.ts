import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import {
  HealthImplementation,
  protoPath as healthProtoPath,
} from "grpc-health-check";
import {
  TokenServiceService,
  type TokenServiceServer,
} from "../generated/token/v1/token_service";

/** Folder of the service's .proto files, beside src/ and dist/. */
export const PROTO_DIR = path.resolve(__dirname, "..", "..", "proto");

/** Full name of the service, as health checks and reflection know it. */
export const TOKEN_SERVICE_NAME = "token.v1.TokenService";

/**
 * Loads the descriptors that server reflection serves, so `grpcurl list`
 * and `describe` work with no .proto files at hand.
 */
function loadReflectionDescriptors(): protoLoader.PackageDefinition {
  const healthRoot = path.resolve(path.dirname(healthProtoPath), "..", "..");
  return protoLoader.loadSync(
    ["token/v1/token_service.proto", "health/v1/health.proto"],
    {
      includeDirs: [PROTO_DIR, healthRoot],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    },
  );
}

/** The gRPC server with its health service. */
export interface GrpcServer {
  server: grpc.Server;
  health: HealthImplementation;
}

/** Creates the server with TokenService, health checking and reflection. */
export function createGrpcServer(
  handlers: TokenServiceServer,
  maxMessageBytes: number,
): GrpcServer {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": maxMessageBytes,
    "grpc.max_send_message_length": maxMessageBytes,
  });
  server.addService(TokenServiceService, handlers);

  const health = new HealthImplementation({
    "": "NOT_SERVING",
    [TOKEN_SERVICE_NAME]: "NOT_SERVING",
  });
  health.addToServer(server);

  new ReflectionService(loadReflectionDescriptors()).addToServer(server);
  return { server, health };
}

/** Binds the server to host:port and returns the bound port. */
export function bindServer(
  server: grpc.Server,
  address: string,
  credentials = grpc.ServerCredentials.createInsecure(),
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
