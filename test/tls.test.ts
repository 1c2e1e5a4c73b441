import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { credentials, Metadata, status } from "@grpc/grpc-js";
import { expect } from "chai";
import { TokenServiceClient } from "../src/generated/token/v1/token_service";
import { eventsOf } from "./support/assertions";
import {
  call,
  callError,
  ownerRequest,
  startTestService,
  type TestService,
} from "./support/service";

/** Makes a CA, a server certificate for 127.0.0.1 and a client certificate. */
function makeCertificates(dir: string): void {
  const openssl = (...args: string[]) =>
    execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });

  openssl(
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=test-ca",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
  );
  for (const [name, subject, extension] of [
    ["server", "/CN=token-service", "subjectAltName=IP:127.0.0.1"],
    ["client", "/CN=profile-gateway", "extendedKeyUsage=clientAuth"],
  ]) {
    openssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      subject,
      "-keyout",
      `${name}.key`,
      "-out",
      `${name}.csr`,
    );
    fs.writeFileSync(path.join(dir, `${name}.ext`), `${extension}\n`);
    openssl(
      "x509",
      "-req",
      "-in",
      `${name}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      `${name}.ext`,
      "-out",
      `${name}.pem`,
    );
  }
}

describe("mutual TLS", () => {
  let dir: string;
  let service: TestService;
  const read = (name: string) => fs.readFileSync(path.join(dir, name));

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "token-service-tls-"));
    makeCertificates(dir);
    service = await startTestService({
      GRPC_TLS_CERT_FILE: path.join(dir, "server.pem"),
      GRPC_TLS_KEY_FILE: path.join(dir, "server.key"),
      GRPC_TLS_CLIENT_CA_FILE: path.join(dir, "ca.pem"),
    });
  });

  after(async () => {
    await service.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("records the certificate's name as the caller", async () => {
    const client = new TokenServiceClient(
      `127.0.0.1:${service.app.port}`,
      credentials.createSsl(
        read("ca.pem"),
        read("client.key"),
        read("client.pem"),
      ),
    );
    const metadata = new Metadata();
    metadata.set("x-client-service", "someone-else");
    const request = ownerRequest();

    await call(client, client.getOrProvision, request, {}, metadata);
    client.close();

    const [event] = await eventsOf(service.db, request.userId);
    expect(event.client_service).to.equal("profile-gateway");
  });

  it("rejects a client without a certificate", async () => {
    const client = new TokenServiceClient(
      `127.0.0.1:${service.app.port}`,
      credentials.createSsl(read("ca.pem")),
    );

    const err = await callError(client, client.getOrProvision, ownerRequest(), {
      deadline: Date.now() + 5000,
    });
    client.close();

    expect(err.code).to.equal(status.UNAVAILABLE);
  });
});
