import { type ChildProcess, spawn } from "node:child_process";
import fs from "node:fs";
import http2 from "node:http2";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { credentials } from "@grpc/grpc-js";
import { expect } from "chai";
import {
  TokenServiceClient,
  ValidationResult,
} from "../src/generated/token/v1/token_service";
import { call, ownerRequest, withNewRequestId } from "./support/service";

const ROOT = path.resolve(__dirname, "..");

interface RunningProcess {
  child: ChildProcess;
  port: number;
  lines: string[];
}

/** Starts `src/main.ts` with DATABASE_URL unset and waits for its port. */
function startEmbedded(dataDir: string): Promise<RunningProcess> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DATA_DIR: dataDir,
    GRPC_ADDRESS: "127.0.0.1:0",
  };
  for (const name of [
    "DATABASE_URL",
    "TOKEN_ENCRYPTION_KEY",
    "TOKEN_SIGNING_SECRET",
  ]) {
    delete env[name];
  }
  const child = spawn(
    process.execPath,
    ["--import", "tsx", path.join(ROOT, "src/main.ts")],
    { cwd: ROOT, env, stdio: ["ignore", "pipe", "inherit"] },
  );

  const lines: string[] = [];
  return new Promise((resolve, reject) => {
    child.once("exit", (code) =>
      reject(new Error(`exited with code ${code}:\n${lines.join("\n")}`)),
    );
    readline.createInterface({ input: child.stdout! }).on("line", (line) => {
      lines.push(line);
      const entry = JSON.parse(line);
      if (entry.msg === "server started") {
        resolve({ child, port: entry.port, lines });
      }
    });
  });
}

function stop(running: RunningProcess): Promise<number | null> {
  return new Promise((resolve) => {
    running.child.once("exit", (code) => resolve(code));
    running.child.kill("SIGTERM");
  });
}

describe("embedded database", () => {
  let dataDir: string;

  before(() => {
    dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "token-service-"));
  });

  after(() => {
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  it("serves GetOrProvision with DATABASE_URL unset", async () => {
    const request = ownerRequest();

    const first = await startEmbedded(dataDir);
    const client = new TokenServiceClient(
      `127.0.0.1:${first.port}`,
      credentials.createInsecure(),
    );
    const created = await call(client, client.getOrProvision, request);
    client.close();
    const firstExit = await stop(first);

    expect(created.provisioned).to.equal(true);
    expect(created.token!.secret).to.match(/^vtk_[A-Za-z0-9_-]{43}$/);
    expect(firstExit).to.equal(0);
    expect(first.lines.join("\n")).to.contain("generated development keys");
    expect(first.lines.join("\n")).to.not.contain(created.token!.secret);
    const keyFile = fs.statSync(path.join(dataDir, "dev-keys.json"));
    expect(keyFile.mode & 0o077).to.equal(0);
  });

  it("logs grpc-js's own errors as JSON lines", async () => {
    const running = await startEmbedded(dataDir);
    // grpc-js drops a metadata value that is not ASCII and reports it
    // through its logger. A grpc-js client would not send such a value.
    const session = http2.connect(`http://127.0.0.1:${running.port}`);
    const stream = session.request({
      ":method": "POST",
      ":path": "/token.v1.TokenService/ValidateToken",
      "content-type": "application/grpc",
      te: "trailers",
      "x-client-service": "caf\u00e9",
    });
    stream.end(Buffer.alloc(5));
    stream.resume();
    await new Promise((resolve) => stream.on("close", resolve));
    session.close();
    const exitCode = await stop(running);

    expect(exitCode).to.equal(0);
    const grpcLines = running.lines
      .map((line) => JSON.parse(line) as { source?: string; msg: string })
      .filter((line) => line.source === "grpc-js");
    expect(grpcLines, "grpc-js lines").to.have.length.greaterThan(0);
    expect(grpcLines[0].msg).to.contain("x-client-service");
  });

  it("rejects a second process on one folder", async () => {
    const first = await startEmbedded(dataDir);

    let failure: Error | undefined;
    try {
      await startEmbedded(dataDir);
    } catch (err) {
      failure = err as Error;
    }
    await stop(first);

    expect(failure, "second start").to.not.equal(undefined);
    expect(failure!.message).to.contain(`in use by process ${first.child.pid}`);
  });

  it("keeps tokens and keys across restarts", async () => {
    const request = ownerRequest();
    const first = await startEmbedded(dataDir);
    let client = new TokenServiceClient(
      `127.0.0.1:${first.port}`,
      credentials.createInsecure(),
    );
    const created = await call(client, client.getOrProvision, request);
    const validation = await call(client, client.validateToken, {
      secret: created.token!.secret,
    });
    client.close();
    await stop(first);

    const second = await startEmbedded(dataDir);
    client = new TokenServiceClient(
      `127.0.0.1:${second.port}`,
      credentials.createInsecure(),
    );
    const again = await call(
      client,
      client.getOrProvision,
      withNewRequestId(request),
    );
    client.close();
    await stop(second);

    expect(again.provisioned).to.equal(false);
    expect(again.token!.secret).to.equal(created.token!.secret);
    // The last_used_at update queued by ValidateToken is written on stop.
    expect(validation.result).to.equal(
      ValidationResult.VALIDATION_RESULT_VALID,
    );
    expect(again.token!.lastUsedAt).to.be.instanceOf(Date);
  });
});
