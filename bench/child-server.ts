import { Server, ServerCredentials } from "@grpc/grpc-js";

/**
 * Binds a bench child's server to a free loopback port, sends the port to
 * the parent over IPC, and stops the server when the parent disconnects.
 */
export function serveToParent(server: Server): void {
  server.bindAsync(
    "127.0.0.1:0",
    ServerCredentials.createInsecure(),
    (err, port) => {
      if (err) {
        throw err;
      }
      process.send!({ port });
    },
  );

  process.on("disconnect", () => {
    server.forceShutdown();
    process.exit(0);
  });
}
