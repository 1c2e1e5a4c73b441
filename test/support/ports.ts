import { createServer } from "node:net";

/**
 * Returns a local port that nothing listens on at the moment of the call.
 * Another process may take it afterwards, so use it at once.
 */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === "string") {
    throw new Error("the probe server reported no port");
  }
  return address.port;
}
