import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import tls from "node:tls";

/** A self-signed certificate and its private key, both PEM. */
export interface TestCertificate {
  cert: Buffer;
  key: Buffer;
}

/**
 * Makes a one-day self-signed P-256 certificate for localhost and
 * 127.0.0.1 with the openssl command. Returns undefined when openssl is
 * not installed.
 */
export function makeCertificate(): TestCertificate | undefined {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "token-service-tls-"));
  const certFile = path.join(dir, "cert.pem");
  const keyFile = path.join(dir, "key.pem");
  try {
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
        "-keyout",
        keyFile,
        "-out",
        certFile,
      ],
      { stdio: "ignore" },
    );
    return { cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      return undefined;
    }
    throw err;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A TLS listener in front of a plain-text port. */
export interface TlsProxy {
  port: number;
  close(): Promise<void>;
}

/**
 * Starts a TLS listener on a free local port that forwards the decrypted
 * bytes to `targetPort`, so that a plain-text gRPC server can be reached
 * over TLS. With `requireClientCert`, the listener accepts only clients
 * that present the certificate itself (mutual TLS).
 */
export async function startTlsProxy(
  certificate: TestCertificate,
  targetPort: number,
  requireClientCert = false,
): Promise<TlsProxy> {
  // Open gRPC channels keep their connections, so close ends them itself.
  const sockets = new Set<net.Socket>();
  const server = tls.createServer(
    {
      key: certificate.key,
      cert: certificate.cert,
      requestCert: requireClientCert,
      rejectUnauthorized: requireClientCert,
      ca: requireClientCert ? [certificate.cert] : undefined,
    },
    (client) => {
      const upstream = net.connect(targetPort, "127.0.0.1");
      sockets.add(client).add(upstream);
      client.pipe(upstream).pipe(client);
      client.on("error", () => upstream.destroy());
      upstream.on("error", () => client.destroy());
    },
  );

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));

  const { port } = server.address() as net.AddressInfo;
  const close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) {
        socket.destroy();
      }
    });
  return { port, close };
}
