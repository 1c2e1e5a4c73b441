import { randomBytes } from "node:crypto";
import { expect } from "chai";
import { ConfigError, loadConfig } from "../src/config";

const DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test";
const KEY = randomBytes(32).toString("base64");
const SIGNING = randomBytes(32).toString("base64");

describe("loadConfig", () => {
  it("applies the documented defaults", () => {
    const config = loadConfig({});

    expect(config.grpcAddress).to.equal("127.0.0.1:50051");
    expect(config.tokenLifetimeDays).to.equal(90);
    expect(config.database.databaseUrl).to.equal(undefined);
    expect(config.database.poolMax).to.equal(10);
    expect(config.lockTimeoutMs).to.equal(2000);
    expect(config.statementTimeoutMs).to.equal(5000);
  });

  it("requires the encryption key with DATABASE_URL", () => {
    expect(() =>
      loadConfig({ DATABASE_URL, TOKEN_SIGNING_SECRET: SIGNING }),
    ).to.throw(ConfigError, /TOKEN_ENCRYPTION_KEY is missing/);
  });

  it("requires the signing secret with DATABASE_URL", () => {
    expect(() =>
      loadConfig({ DATABASE_URL, TOKEN_ENCRYPTION_KEY: KEY }),
    ).to.throw(ConfigError, /TOKEN_SIGNING_SECRET is missing/);
  });

  it("rejects a key of the wrong size", () => {
    const shortKey = randomBytes(16).toString("base64");

    expect(() =>
      loadConfig({
        DATABASE_URL,
        TOKEN_ENCRYPTION_KEY: shortKey,
        TOKEN_SIGNING_SECRET: SIGNING,
      }),
    ).to.throw(ConfigError, /16 bytes; AES-256 needs 32/);
  });

  it("rejects a DATABASE_URL that is no URL", () => {
    const load = () =>
      loadConfig({
        DATABASE_URL: "not a url:secret-password",
        TOKEN_ENCRYPTION_KEY: KEY,
        TOKEN_SIGNING_SECRET: SIGNING,
      });

    expect(load).to.throw(ConfigError, /DATABASE_URL is invalid: set a URL/);
    expect(load).to.not.throw(/secret-password/);
  });

  it("rejects a DATABASE_URL of another scheme", () => {
    expect(() =>
      loadConfig({
        DATABASE_URL: "mysql://root@127.0.0.1:3306/test",
        TOKEN_ENCRYPTION_KEY: KEY,
        TOKEN_SIGNING_SECRET: SIGNING,
      }),
    ).to.throw(ConfigError, /DATABASE_URL is invalid/);
  });

  it("names an invalid number and its range", () => {
    expect(() => loadConfig({ API_KEY_EXPIRY_DAYS: "ninety" })).to.throw(
      ConfigError,
      /API_KEY_EXPIRY_DAYS="ninety" is invalid: set a whole number from 1/,
    );
  });

  it("reads retired keys", () => {
    const retired = randomBytes(32).toString("base64");

    const config = loadConfig({
      DATABASE_URL,
      TOKEN_ENCRYPTION_KEY: KEY,
      TOKEN_SIGNING_SECRET: SIGNING,
      TOKEN_RETIRED_KEYS: `old1:${retired}`,
    });

    expect(config.keys.retiredKeys.map((k) => k.id)).to.deep.equal(["old1"]);
  });
});
