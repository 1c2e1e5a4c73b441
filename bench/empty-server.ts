/**
 * A child process serving only EMPTY_METHOD, which returns an empty message
 * at once. It sends its bound port to the parent over IPC.
 */
import { type handleUnaryCall, Server } from "@grpc/grpc-js";
import { serveToParent } from "./child-server";
import { EMPTY_METHOD } from "./empty-service";

const reply: handleUnaryCall<Buffer, Buffer> = (_call, callback) => {
  callback(null, Buffer.alloc(0));
};

const server = new Server();
server.addService({ call: EMPTY_METHOD }, { call: reply });

serveToParent(server);
