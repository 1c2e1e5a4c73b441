import { spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import path from "node:path";
import { expect } from "chai";
import { ADMIN_DATABASE_URL } from "./support/database";
import { testEnvironment } from "./support/service";

const ROOT = path.resolve(__dirname, "..");

/** Runs src/main.ts on a database until it exits, within 20 s. */
function startAndWait(databaseUrl: string) {
  const result = spawnSync(
    process.execPath,
    ["--import", "tsx", path.join(ROOT, "src/main.ts")],
    {
      cwd: ROOT,
      env: { ...process.env, ...testEnvironment(databaseUrl) },
      encoding: "utf8",
      timeout: 20_000,
    },
  );
  const lines = result.stdout
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as { level: number; msg: string });
  return {
    status: result.status,
    stdout: result.stdout,
    fatal: lines.find((line) => line.level === 60),
  };
}

describe("start-up", () => {
  it("names DATABASE_URL when PostgreSQL is unreachable", () => {
    // Port 1 on the loopback address refuses connections at once.
    const run = startAndWait("postgres://tokens:hunter2@127.0.0.1:1/tokens");

    expect(run.status, "exit code").to.equal(1);
    expect(run.fatal?.msg).to.equal(
      "start-up failed: cannot connect to PostgreSQL at 127.0.0.1:1 from " +
        "DATABASE_URL; check the URL and that the server is running",
    );
    expect(run.stdout, "output").to.not.contain("hunter2");
  });

  it("names a database that does not exist", () => {
    const url = new URL(ADMIN_DATABASE_URL);
    url.pathname = `/missing_${randomUUID().slice(0, 8)}`;

    const run = startAndWait(url.toString());

    expect(run.status, "exit code").to.equal(1);
    expect(run.fatal?.msg).to.equal(
      `start-up failed: database "${url.pathname.slice(1)}" does not exist ` +
        `on ${url.host}; create it (createdb) or fix DATABASE_URL`,
    );
  });
});
