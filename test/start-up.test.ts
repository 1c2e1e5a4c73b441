import { spawnSync } from "node:child_process";
import path from "node:path";
import { expect } from "chai";
import { testEnvironment } from "./support/service";

const ROOT = path.resolve(__dirname, "..");

describe("start-up", () => {
  it("names DATABASE_URL when PostgreSQL is unreachable", () => {
    // Port 1 on the loopback address refuses connections at once.
    const databaseUrl = "postgres://tokens:hunter2@127.0.0.1:1/tokens";
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
    const fatal = lines.find((line) => line.level === 60);
    expect(result.status, "exit code").to.equal(1);
    expect(fatal?.msg).to.equal(
      "start-up failed: cannot connect to PostgreSQL at 127.0.0.1:1 from " +
        "DATABASE_URL; check the URL and that the server is running",
    );
    expect(result.stdout, "output").to.not.contain("hunter2");
  });
});
