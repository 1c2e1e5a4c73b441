import { expect } from "chai";
import { eventsOf, tokensOf } from "../support/assertions";
import {
  ownerRequest,
  startTestService,
  type TestService,
} from "../support/service";
import { countStored, tokenRpcs } from "./support/calls";
import { CaseFigures, codeOf } from "./support/figures";
import { installPlannedFaults, planFailures } from "./support/planned-faults";

const FAKE_SECRET = "vtk_" + "A".repeat(43);

/** What the fault hook throws, chosen by the user id of the request. */
const faults: Record<string, () => never> = {
  "fault-sql": () => {
    throw new Error(
      `insert into "api_tokens" ("token_hash") values ('${FAKE_SECRET}')`,
    );
  },
  "fault-type": () => {
    throw new TypeError("Cannot read properties of undefined (reading 'id')");
  },
  "fault-string": () => {
    throw `raw string with ${FAKE_SECRET}`;
  },
  "fault-pg": () => {
    throw Object.assign(new Error(`select '${FAKE_SECRET}' - boom`), {
      code: "XX000",
    });
  },
};

/** Throws the planned fault of the call's user, if it has one. */
function injectFault(userId: string): void {
  for (const [prefix, raise] of Object.entries(faults)) {
    if (userId.startsWith(prefix)) {
      raise();
    }
  }
}

describe("unexpected errors", () => {
  let service: TestService;

  before(async () => {
    service = await startTestService(
      { LOG_LEVEL: "info" },
      {
        hooks: {
          beforeHandler: (_context, request) => {
            injectFault((request as { userId: string }).userId);
          },
        },
      },
    );
    await installPlannedFaults(service.db);
  });

  after(async () => {
    await service?.stop();
  });

  /** Checks that a status message leaks nothing of its cause. */
  function expectCleanMessage(message: string): void {
    expect(message, "message").to.match(
      /^internal error \(error id [0-9a-f-]{36}\)/,
    );
    expect(message, "message").to.not.include("vtk_");
    expect(message, "message").to.not.match(/insert|select|api_tokens/i);
    expect(message, "message").to.not.match(/\n\s+at /);
  }

  it("maps handler exceptions to INTERNAL", async () => {
    const rpcs = tokenRpcs(service.client);
    const figures = new CaseFigures("exceptions thrown in handlers");
    const messages: string[] = [];

    for (const prefix of Object.keys(faults)) {
      for (const rpc of [
        "createDefault",
        "regenerate",
        "getOrProvision",
      ] as const) {
        const request = ownerRequest(`${prefix}-${rpc}`);
        const outcome = await figures.settle(rpcs[rpc](request));
        expect(codeOf(outcome), `${prefix} ${rpc}`).to.equal("INTERNAL");
        messages.push(outcome.ok ? "" : outcome.message);
      }
    }
    const after = await figures.settle(
      tokenRpcs(service.client).regenerate(ownerRequest()),
    );

    figures.print(await countStored(service.db));
    messages.forEach(expectCleanMessage);
    expect(after.ok, "next call succeeded").to.equal(true);
    const stored = await tokensOf(service.db, "fault-sql-createDefault");
    expect(stored, "tokens of failed calls").to.have.length(0);
    const logged = service.logs
      .entries()
      .filter((line) => line.msg === "call failed with an unexpected error");
    expect(logged, "logged errors").to.have.length(messages.length);
  });

  it("rolls back a change when the database raises", async () => {
    const figures = new CaseFigures("XX000 raised by the audit insert");
    const request = ownerRequest();
    await planFailures(service.db, request.userId, "XX000", 1);

    const outcome = await figures.settle(
      tokenRpcs(service.client).getOrProvision(request),
    );

    const stored = await countStored(service.db, request.userId);
    figures.print(stored);
    expect(codeOf(outcome)).to.equal("INTERNAL");
    expectCleanMessage(outcome.ok ? "" : outcome.message);
    expect(stored.tokens, "token rows").to.equal(0);
    expect(await eventsOf(service.db, request.userId)).to.have.length(0);
  });
});
