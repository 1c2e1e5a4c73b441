import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import fc from "fast-check";
import { GetOrProvisionResponse } from "../../src/generated/token/v1/token_service";
import {
  ownerRequest,
  startTestService,
  type TestService,
} from "../support/service";
import { countStored, tokenRpcs, unauditedTokens } from "./support/calls";
import { CaseFigures } from "./support/figures";
import { encodeField, RawClient, WireType } from "./support/wire";

/** Requests one property run sends; the suite has to stay in minutes. */
const RUNS = 2000;
const MAX_MESSAGE_BYTES = 4096;
const METHODS = ["CreateDefault", "Regenerate", "GetOrProvision", "Delete"];

/** Codes a well-formed request may also get from the method itself. */
const DOMAIN_CODES: Record<string, string[]> = {
  CreateDefault: ["ALREADY_EXISTS"],
  Delete: ["NOT_FOUND"],
};

const utf8 = (text: string) => Buffer.from(text, "utf8");

/** Field contents: plausible ids, any code points, long text, raw bytes. */
const fieldBytes = fc.oneof(
  {
    weight: 16,
    arbitrary: fc.stringMatching(/^[A-Za-z0-9._@-]{1,40}$/).map(utf8),
  },
  {
    weight: 2,
    arbitrary: fc.string({ unit: "binary", maxLength: 60 }).map(utf8),
  },
  {
    weight: 1,
    arbitrary: fc
      .string({ unit: "grapheme", minLength: 250, maxLength: 600 })
      .map(utf8),
  },
  {
    weight: 1,
    arbitrary: fc
      .constantFrom(
        "\u0000",
        "\n",
        "\u200b",
        "\u202e",
        "\ud800",
        " x",
        "\u2028",
      )
      .map(utf8),
  },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 40 }).map(Buffer.from) },
);

/** A field the schema does not define, with any wire type. */
const unknownField = fc
  .record({
    number: fc.integer({ min: 5, max: 2 ** 29 - 1 }),
    wireType: fc.constantFrom(
      WireType.varint,
      WireType.fixed64,
      WireType.lengthDelimited,
      WireType.fixed32,
    ),
    value: fc.nat(),
    bytes: fc.uint8Array({ maxLength: 20 }).map(Buffer.from),
  })
  .map(({ number, wireType, value, bytes }) =>
    encodeField(
      number,
      wireType,
      wireType === WireType.lengthDelimited ? bytes : value,
    ),
  );

const auditBytes = fc
  .record(
    {
      requestId: fieldBytes,
      actorId: fieldBytes,
      clientIp: fc.oneof(fc.ipV4().map(utf8), fc.ipV6().map(utf8), fieldBytes),
      userAgent: fieldBytes,
      unknown: fc.array(unknownField, { maxLength: 2 }),
    },
    { requiredKeys: ["unknown"] },
  )
  .map((audit) =>
    Buffer.concat([
      ...[audit.requestId, audit.actorId, audit.clientIp, audit.userAgent]
        .map((value, index) =>
          value ? encodeField(index + 1, WireType.lengthDelimited, value) : [],
        )
        .flat(),
      ...audit.unknown,
    ]),
  );

/** A request of any of the four methods, encoded by hand. */
const rawRequest = fc
  .record(
    {
      method: fc.constantFrom(...METHODS),
      userId: fieldBytes,
      orgId: fieldBytes,
      audit: auditBytes,
      allowMissing: fc.boolean(),
      unknown: fc.array(unknownField, { maxLength: 3 }),
      oversized: fc.constantFrom(false, false, false, false, false, true),
      // Random bytes after the fields, which mostly break the encoding:
      // a truncated varint, a length past the end, a group or wire type 7.
      garbage: fc.oneof(
        { weight: 5, arbitrary: fc.constant(Buffer.alloc(0)) },
        {
          weight: 1,
          arbitrary: fc
            .uint8Array({ minLength: 1, maxLength: 16 })
            .map(Buffer.from),
        },
      ),
    },
    {
      requiredKeys: [
        "method",
        "userId",
        "allowMissing",
        "unknown",
        "oversized",
        "garbage",
      ],
    },
  )
  .map((request) => {
    const parts = [
      encodeField(1, WireType.lengthDelimited, request.userId),
      ...(request.orgId
        ? [encodeField(2, WireType.lengthDelimited, request.orgId)]
        : []),
      ...(request.audit
        ? [encodeField(3, WireType.lengthDelimited, request.audit)]
        : []),
      ...(request.method === "Delete" && request.allowMissing
        ? [encodeField(4, WireType.varint, 1)]
        : []),
      ...request.unknown,
      request.garbage,
      ...(request.oversized
        ? [
            encodeField(
              99,
              WireType.lengthDelimited,
              Buffer.alloc(MAX_MESSAGE_BYTES),
            ),
          ]
        : []),
    ];
    return {
      method: request.method,
      userId: request.userId,
      // Garbage may hold another user_id field, which would win.
      exactUserId: request.garbage.length === 0,
      bytes: Buffer.concat(parts),
    };
  });

describe("bad input", () => {
  let service: TestService;
  let raw: RawClient;

  before(async () => {
    service = await startTestService({
      LOG_LEVEL: "warn",
      GRPC_MAX_MESSAGE_BYTES: String(MAX_MESSAGE_BYTES),
    });
    raw = new RawClient(service.app.port);
  });

  after(async () => {
    raw?.close();
    await service?.stop();
  });

  it("answers random requests with client errors only", async () => {
    const figures = new CaseFigures(`${RUNS} random raw requests`);

    await fc.assert(
      fc.asyncProperty(rawRequest, async (request) => {
        figures.calls++;
        const outcome = await raw.call(
          `/token.v1.TokenService/${request.method}`,
          request.bytes,
        );
        const code = status[outcome.code];
        figures.count(code);

        const allowed =
          request.bytes.length > MAX_MESSAGE_BYTES
            ? ["RESOURCE_EXHAUSTED"]
            : [
                "OK",
                "INVALID_ARGUMENT",
                ...(DOMAIN_CODES[request.method] ?? []),
              ];
        expect(code, outcome.message).to.be.oneOf(allowed);

        if (
          code === "OK" &&
          request.method !== "Delete" &&
          request.exactUserId
        ) {
          // Every response of the other three methods starts with a Token
          // in field 1, as GetOrProvisionResponse does.
          const { token } = GetOrProvisionResponse.decode(outcome.response!);
          expect(token?.userId, "stored user_id").to.equal(
            request.userId.toString("utf8"),
          );
        }
      }),
      { numRuns: RUNS },
    );

    const alive = await figures.settle(
      tokenRpcs(service.client).getOrProvision(ownerRequest()),
    );
    figures.print(await countStored(service.db));
    expect(alive.ok, "call after the run").to.equal(true);
    expect(
      await unauditedTokens(service.db),
      "tokens without their events",
    ).to.deep.equal([]);
  });
});
