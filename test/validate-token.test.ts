import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import {
  TokenKind,
  ValidationResult,
} from "../src/generated/token/v1/token_service";
import { touchLastUsed } from "../src/tokens/repository";
import { hashSecret } from "../src/tokens/secret";
import { eventsOf, violatedFields } from "./support/assertions";
import { recordQueries, rpcsOf } from "./support/rpc";
import { insertToken } from "./support/rows";
import {
  callError,
  ownerRequest,
  startTestService,
  type TestService,
  withNewRequestId,
} from "./support/service";

const MINUTE_MS = 60_000;

function newSecret(): string {
  return `vtk_${randomBytes(32).toString("base64url")}`;
}

async function countQueries(
  service: TestService,
  work: () => Promise<unknown>,
): Promise<number> {
  return (await recordQueries(service, work)).length;
}

describe("TokenService", () => {
  let service: TestService;
  let rpc: ReturnType<typeof rpcsOf>;

  before(async () => {
    service = await startTestService({ VALIDATION_CACHE_TTL_MS: "0" });
    rpc = rpcsOf(service);
  });

  after(async () => {
    await service.stop();
  });

  describe("ValidateToken", () => {
    it("returns VALID for a default token", async () => {
      const request = ownerRequest(undefined, "org-1");
      const { token } = await rpc.createDefault(request);

      const response = await rpc.validateToken(token!.secret);

      expect(response.result).to.equal(
        ValidationResult.VALIDATION_RESULT_VALID,
      );
      expect(response.tokenId).to.equal(token!.id);
      expect(response.userId).to.equal(request.userId);
      expect(response.orgId).to.equal("org-1");
      expect(response.kind).to.equal(TokenKind.TOKEN_KIND_DEFAULT);
      expect(response.label).to.equal("Default");
      expect(response.expiresAt?.getTime()).to.equal(
        token!.expiresAt!.getTime(),
      );
      expect(response.previousSecret).to.equal(false);
      expect(response.graceEndsAt).to.equal(undefined);
    });

    it("returns VALID for a user key", async () => {
      const secret = newSecret();
      const id = await insertToken(service.db, service.config, {
        userId: ownerRequest().userId,
        kind: "user",
        label: "ci key",
        secret,
      });

      const response = await rpc.validateToken(secret);

      expect(response.result).to.equal(
        ValidationResult.VALIDATION_RESULT_VALID,
      );
      expect(response.tokenId).to.equal(id);
      expect(response.kind).to.equal(TokenKind.TOKEN_KIND_USER);
      expect(response.label).to.equal("ci key");
    });

    it("returns VALID for a legacy token", async () => {
      const legacy = randomBytes(16).toString("hex");
      const id = await insertToken(service.db, service.config, {
        userId: ownerRequest().userId,
        kind: "default",
        secret: legacy,
      });

      const response = await rpc.validateToken(legacy);

      expect(response.result).to.equal(
        ValidationResult.VALIDATION_RESULT_VALID,
      );
      expect(response.tokenId).to.equal(id);
    });

    it("returns NOT_FOUND for an unknown secret", async () => {
      const response = await rpc.validateToken(newSecret());

      expect(response.result).to.equal(
        ValidationResult.VALIDATION_RESULT_NOT_FOUND,
      );
      expect(response.tokenId).to.equal("");
      expect(response.userId).to.equal("");
      expect(response.expiresAt).to.equal(undefined);
    });

    it("returns EXPIRED for an expired token", async () => {
      const secret = newSecret();
      const id = await insertToken(service.db, service.config, {
        userId: ownerRequest().userId,
        kind: "default",
        secret,
        expiresAt: new Date(Date.now() - MINUTE_MS),
      });

      const response = await rpc.validateToken(secret);

      expect(response.result).to.equal(
        ValidationResult.VALIDATION_RESULT_EXPIRED,
      );
      expect(response.tokenId).to.equal(id);
    });

    it("returns DISABLED before EXPIRED", async () => {
      const disabled = newSecret();
      const both = newSecret();
      for (const [secret, expiresAt] of [
        [disabled, undefined],
        [both, new Date(Date.now() - MINUTE_MS)],
      ] as const) {
        await insertToken(service.db, service.config, {
          userId: ownerRequest().userId,
          kind: "user",
          secret,
          disabled: true,
          expiresAt,
        });
      }

      const onlyDisabled = await rpc.validateToken(disabled);
      const alsoExpired = await rpc.validateToken(both);

      expect(onlyDisabled.result).to.equal(
        ValidationResult.VALIDATION_RESULT_DISABLED,
      );
      expect(alsoExpired.result).to.equal(
        ValidationResult.VALIDATION_RESULT_DISABLED,
      );
    });

    const malformed: [string, string][] = [
      ["empty string", ""],
      ["missing prefix", randomBytes(32).toString("base64url")],
      ["short secret", newSecret().slice(0, 46)],
      ["long secret", `${newSecret()}A`],
      ["non-base64url character", `vtk_${"+".repeat(43)}`],
      ["uppercase legacy hex", randomBytes(16).toString("hex").toUpperCase()],
      ["33 hex characters", `${randomBytes(16).toString("hex")}a`],
      ["surrounding whitespace", ` ${newSecret()}`],
      ["bearer prefix", `Bearer ${newSecret()}`],
    ];
    for (const [name, secret] of malformed) {
      it(`returns MALFORMED for ${name}`, async () => {
        let response;
        const queries = await countQueries(service, async () => {
          response = await rpc.validateToken(secret);
        });

        expect(response!.result).to.equal(
          ValidationResult.VALIDATION_RESULT_MALFORMED,
        );
        expect(queries, "database queries").to.equal(0);
      });
    }

    it("queries the database for a well-formed secret", async () => {
      // The counterpart of the MALFORMED cases: proves the counter counts.
      const queries = await countQueries(service, () =>
        rpc.validateToken(newSecret()),
      );

      expect(queries).to.be.greaterThan(0);
    });

    it("never logs the secret or its hash", async () => {
      const { token } = await rpc.createDefault(ownerRequest());

      await rpc.validateToken(token!.secret);
      await service.app.validator.settle();

      const text = service.logs.lines.join("\n");
      expect(text).to.contain("ValidateToken");
      expect(text).to.not.contain(token!.secret);
      expect(text).to.not.contain(hashSecret(token!.secret));
    });

    it("logs the result and the token id in the call line", async () => {
      const { token } = await rpc.createDefault(ownerRequest());

      await rpc.validateToken(token!.secret);
      await rpc.validateToken(newSecret());

      const lines = service.logs
        .entries()
        .filter((e) => e.msg === "call finished" && e.rpc === "ValidateToken");
      const [valid, unknown] = lines.slice(-2);
      expect(valid.result).to.equal("VALIDATION_RESULT_VALID");
      expect(valid.tokenId).to.equal(token!.id);
      expect(unknown.result).to.equal("VALIDATION_RESULT_NOT_FOUND");
      expect(unknown).to.not.have.property("tokenId");
    });
  });

  describe("ValidateToken last_used_at", () => {
    async function lastUsedAt(tokenId: string): Promise<Date | null> {
      const [row] = await service.db("api_tokens").where({ id: tokenId });
      return row.last_used_at;
    }

    function updateLines(tokenId: string) {
      return service.logs
        .entries()
        .filter(
          (e) => e.msg === "updated last_used_at" && e.tokenId === tokenId,
        );
    }

    it("updates once for two quick validations", async () => {
      const { token } = await rpc.createDefault(ownerRequest());
      const stale = new Date(Date.now() - 2 * MINUTE_MS);
      await service
        .db("api_tokens")
        .where({ id: token!.id })
        .update({ last_used_at: stale });

      await Promise.all([
        rpc.validateToken(token!.secret),
        rpc.validateToken(token!.secret),
      ]);
      await service.app.validator.settle();
      const afterFirst = await lastUsedAt(token!.id);
      await rpc.validateToken(token!.secret);
      await service.app.validator.settle();

      expect(afterFirst!.getTime()).to.be.greaterThan(stale.getTime());
      expect((await lastUsedAt(token!.id))!.getTime()).to.equal(
        afterFirst!.getTime(),
      );
      expect(updateLines(token!.id)).to.have.length(1);
    });

    it("updates again after a minute", async () => {
      const { token } = await rpc.createDefault(ownerRequest());
      await rpc.validateToken(token!.secret);
      await service.app.validator.settle();
      const stale = new Date(Date.now() - 2 * MINUTE_MS);
      await service
        .db("api_tokens")
        .where({ id: token!.id })
        .update({ last_used_at: stale });

      await rpc.validateToken(token!.secret);
      await service.app.validator.settle();

      expect((await lastUsedAt(token!.id))!.getTime()).to.be.greaterThan(
        stale.getTime(),
      );
      expect(updateLines(token!.id)).to.have.length(2);
    });

    it("skips invalid tokens", async () => {
      const secret = newSecret();
      const id = await insertToken(service.db, service.config, {
        userId: ownerRequest().userId,
        kind: "user",
        secret,
        disabled: true,
      });

      await rpc.validateToken(secret);
      await service.app.validator.settle();

      expect(await lastUsedAt(id)).to.equal(null);
    });

    it("writes once a minute across callers", async () => {
      // The UPDATE's own condition, which other replicas also rely on.
      const { token } = await rpc.createDefault(ownerRequest());

      const first = await touchLastUsed(service.db, [token!.id], MINUTE_MS);
      const second = await touchLastUsed(service.db, [token!.id], MINUTE_MS);

      expect(first).to.deep.equal([token!.id]);
      expect(second).to.deep.equal([]);
    });

    it("logs a failed update and retries", async () => {
      const { token } = await rpc.createDefault(ownerRequest());
      await service.db.raw(`
        create function reject_last_used() returns trigger
        language plpgsql as $$
        begin raise exception 'last_used_at rejected by the test'; end $$`);
      await service.db.raw(`
        create trigger reject_last_used before update of last_used_at
        on api_tokens for each row execute function reject_last_used()`);
      try {
        await rpc.validateToken(token!.secret);
        await service.app.validator.settle();
      } finally {
        await service.db.raw("drop trigger reject_last_used on api_tokens");
        await service.db.raw("drop function reject_last_used()");
      }
      const failures = service.logs
        .entries()
        .filter((e) =>
          String(e.msg).startsWith("failed to update last_used_at"),
        );
      const afterFailure = await lastUsedAt(token!.id);

      await rpc.validateToken(token!.secret);
      await service.app.validator.settle();

      expect(failures).to.have.length(1);
      expect(failures[0].count).to.equal(1);
      expect(afterFailure).to.equal(null);
      expect(await lastUsedAt(token!.id)).to.not.equal(null);
      expect(updateLines(token!.id)).to.have.length(1);
    });

    it("updates many tokens in one query", async () => {
      const { token: first } = await rpc.createDefault(ownerRequest());
      const { token: second } = await rpc.createDefault(ownerRequest());

      const queries = await recordQueries(service, async () => {
        await rpc.validateToken(first!.secret);
        await rpc.validateToken(second!.secret);
        await service.app.validator.settle();
      });

      const updates = queries.filter((sql) => sql.startsWith("update"));
      expect(updates).to.have.length(1);
      expect(await lastUsedAt(first!.id)).to.not.equal(null);
      expect(await lastUsedAt(second!.id)).to.not.equal(null);
      expect(updateLines(first!.id)).to.have.length(1);
      expect(updateLines(second!.id)).to.have.length(1);
    });
  });

  describe("Regenerate grace_period", () => {
    it("keeps the previous secret valid inside it", async () => {
      const request = ownerRequest();
      const { token: before } = await rpc.createDefault(request);

      const rotated = await rpc.regenerate({
        ...withNewRequestId(request),
        gracePeriod: { seconds: 600, nanos: 0 },
      });
      const old = await rpc.validateToken(before!.secret);
      const current = await rpc.validateToken(rotated.token!.secret);

      const endsAt = rotated.graceEndsAt!.getTime();
      expect(endsAt).to.be.closeTo(Date.now() + 600_000, 5_000);
      expect(old.result).to.equal(ValidationResult.VALIDATION_RESULT_VALID);
      expect(old.previousSecret).to.equal(true);
      expect(old.graceEndsAt!.getTime()).to.equal(endsAt);
      expect(old.tokenId).to.equal(before!.id);
      expect(current.result).to.equal(ValidationResult.VALIDATION_RESULT_VALID);
      expect(current.previousSecret).to.equal(false);
      const events = await eventsOf(service.db, request.userId);
      const [row] = await service
        .db("api_token_events")
        .where({ id: events[1].id });
      expect(row.grace_period_ms).to.equal(600_000);
    });

    it("stops the previous secret after it", async () => {
      const request = ownerRequest();
      const { token: before } = await rpc.createDefault(request);
      await rpc.regenerate({
        ...withNewRequestId(request),
        gracePeriod: { seconds: 2, nanos: 0 },
      });

      const inside = await rpc.validateToken(before!.secret);
      await sleep(2100);
      const after = await rpc.validateToken(before!.secret);

      expect(inside.result).to.equal(ValidationResult.VALIDATION_RESULT_VALID);
      expect(after.result).to.equal(ValidationResult.VALIDATION_RESULT_EXPIRED);
      expect(after.previousSecret).to.equal(true);
    });

    it("stops the previous secret once moved past", async () => {
      const request = ownerRequest();
      const { token: before } = await rpc.createDefault(request);
      await rpc.regenerate({
        ...withNewRequestId(request),
        gracePeriod: { seconds: 3600, nanos: 0 },
      });
      await service
        .db("api_tokens")
        .where({ id: before!.id })
        .update({ previous_expires_at: new Date(Date.now() - 1000) });

      const response = await rpc.validateToken(before!.secret);

      expect(response.result).to.equal(
        ValidationResult.VALIDATION_RESULT_EXPIRED,
      );
    });

    it("stops the previous secret at once without it", async () => {
      const request = ownerRequest();
      const { token: before } = await rpc.createDefault(request);

      const rotated = await rpc.regenerate(withNewRequestId(request));
      const response = await rpc.validateToken(before!.secret);

      expect(rotated.graceEndsAt).to.equal(undefined);
      expect(response.result).to.equal(
        ValidationResult.VALIDATION_RESULT_NOT_FOUND,
      );
      const [row] = await service.db("api_tokens").where({ id: before!.id });
      expect(row.previous_token_hash).to.equal(null);
      const events = await eventsOf(service.db, request.userId);
      const [event] = await service
        .db("api_token_events")
        .where({ id: events[1].id });
      expect(event.grace_period_ms).to.equal(null);
    });

    it("forgets an older previous secret", async () => {
      const request = ownerRequest();
      const { token: first } = await rpc.createDefault(request);
      const grace = { seconds: 600, nanos: 0 };
      const { token: second } = await rpc.regenerate({
        ...withNewRequestId(request),
        gracePeriod: grace,
      });
      await rpc.regenerate({
        ...withNewRequestId(request),
        gracePeriod: grace,
      });

      const oldest = await rpc.validateToken(first!.secret);
      const previous = await rpc.validateToken(second!.secret);

      expect(oldest.result).to.equal(
        ValidationResult.VALIDATION_RESULT_NOT_FOUND,
      );
      expect(previous.result).to.equal(
        ValidationResult.VALIDATION_RESULT_VALID,
      );
      expect(previous.previousSecret).to.equal(true);
    });

    it("is not applied to a disabled token", async () => {
      const request = ownerRequest();
      const { token: before } = await rpc.createDefault(request);
      await service
        .db("api_tokens")
        .where({ id: before!.id })
        .update({ disabled: true });

      const rotated = await rpc.regenerate({
        ...withNewRequestId(request),
        gracePeriod: { seconds: 600, nanos: 0 },
      });
      const response = await rpc.validateToken(before!.secret);

      expect(rotated.graceEndsAt).to.equal(undefined);
      expect(response.result).to.equal(
        ValidationResult.VALIDATION_RESULT_NOT_FOUND,
      );
    });

    it("ends no later than the old expiry", async () => {
      const request = ownerRequest();
      const { token: before } = await rpc.createDefault(request);
      const oldExpiry = new Date(Date.now() + 30_000);
      await service
        .db("api_tokens")
        .where({ id: before!.id })
        .update({ expires_at: oldExpiry });

      const rotated = await rpc.regenerate({
        ...withNewRequestId(request),
        gracePeriod: { seconds: 3600, nanos: 0 },
      });

      expect(rotated.graceEndsAt!.getTime()).to.equal(oldExpiry.getTime());
    });

    const invalid: [string, { seconds: number; nanos: number }, string][] = [
      [
        "negative seconds",
        { seconds: -1, nanos: 0 },
        "grace_period is negative (-1s)",
      ],
      [
        "negative nanos",
        { seconds: 0, nanos: -5 },
        "grace_period is negative (-0.000000005s)",
      ],
      [
        "opposite signs",
        { seconds: 1, nanos: -5 },
        "grace_period.seconds (1) and grace_period.nanos (-5) have opposite " +
          "signs",
      ],
      [
        "over 24 hours",
        { seconds: 86_401, nanos: 0 },
        "grace_period is 86401s, over the maximum of 86400s",
      ],
      [
        "nanos out of range",
        { seconds: 0, nanos: 1_000_000_000 },
        "grace_period.nanos is 1000000000",
      ],
    ];
    for (const [name, gracePeriod, message] of invalid) {
      it(`rejects ${name}`, async () => {
        const request = ownerRequest();

        const err = await callError(service.client, service.client.regenerate, {
          ...request,
          gracePeriod,
        });

        expect(err.code).to.equal(status.INVALID_ARGUMENT);
        expect(violatedFields(err)).to.deep.equal(["grace_period"]);
        expect(err.details).to.contain(message);
        expect(await eventsOf(service.db, request.userId)).to.have.length(0);
      });
    }

    it("rejects seconds beyond 2^53 - 1", async () => {
      const request = ownerRequest();

      const err = await callError(service.client, service.client.regenerate, {
        ...request,
        gracePeriod: { seconds: 2 ** 53, nanos: 0 },
      });

      expect(err.code).to.equal(status.INVALID_ARGUMENT);
      expect(violatedFields(err)).to.deep.equal(["request"]);
      expect(err.details).to.contain("grace_period.seconds");
      expect(err.details).to.contain("±9007199254740991");
      expect(await eventsOf(service.db, request.userId)).to.have.length(0);
    });

    it("accepts exactly 24 hours", async () => {
      const response = await rpc.regenerate({
        ...ownerRequest(),
        gracePeriod: { seconds: 86_400, nanos: 0 },
      });

      expect(response.created).to.equal(true);
    });
  });
});

describe("TokenService validation cache", () => {
  let service: TestService;
  let rpc: ReturnType<typeof rpcsOf>;

  before(async () => {
    service = await startTestService({ VALIDATION_CACHE_TTL_MS: "60000" });
    rpc = rpcsOf(service);
  });

  after(async () => {
    await service.stop();
  });

  it("serves repeats without a query", async () => {
    const { token } = await rpc.createDefault(ownerRequest());
    await rpc.validateToken(token!.secret);

    const queries = await countQueries(service, () =>
      rpc.validateToken(token!.secret),
    );

    expect(queries).to.equal(0);
  });

  it("drops entries on a change in this process", async () => {
    const request = ownerRequest();
    const { token } = await rpc.createDefault(request);
    const before = await rpc.validateToken(token!.secret);

    await rpc.regenerate(withNewRequestId(request));
    const after = await rpc.validateToken(token!.secret);

    expect(before.result).to.equal(ValidationResult.VALIDATION_RESULT_VALID);
    expect(after.result).to.equal(ValidationResult.VALIDATION_RESULT_NOT_FOUND);
  });

  it("drops entries on a delete in this process", async () => {
    const request = ownerRequest();
    const { token } = await rpc.createDefault(request);
    await rpc.validateToken(token!.secret);

    await rpc.delete(withNewRequestId(request));
    const after = await rpc.validateToken(token!.secret);

    expect(after.result).to.equal(ValidationResult.VALIDATION_RESULT_NOT_FOUND);
  });

  it("keeps outside changes until the TTL", async () => {
    // The documented staleness bound: a change this process did not make
    // is not seen while the entry lives.
    const { token } = await rpc.createDefault(ownerRequest());
    await rpc.validateToken(token!.secret);
    await service
      .db("api_tokens")
      .where({ id: token!.id })
      .update({ disabled: true });

    const response = await rpc.validateToken(token!.secret);

    expect(response.result).to.equal(ValidationResult.VALIDATION_RESULT_VALID);
  });
});
