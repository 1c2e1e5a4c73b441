import { randomUUID } from "node:crypto";
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import { expect } from "chai";
import type { Knex } from "knex";
import { eventsOf, tokensOf } from "./support/assertions";
import { ADMIN_DATABASE_URL } from "./support/database";
import {
  call,
  callError,
  ownerRequest,
  startTestService,
  type TestService,
} from "./support/service";

/** Opens a transaction on another connection that locks the default row. */
async function lockDefaultRow(
  db: Knex,
  userId: string,
): Promise<Knex.Transaction> {
  const trx = await db.transaction();
  const rows = await trx("api_tokens")
    .where({ user_id: userId, kind: "default" })
    .forUpdate();
  expect(rows, "locked rows").to.have.length(1);
  return trx;
}

/** Counts the service's sessions of this database that wait for a lock. */
async function waitingSessions(db: Knex): Promise<number> {
  const result = await db.raw(
    `select count(*)::int as n from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid()
        and wait_event_type = 'Lock'`,
  );
  return result.rows[0].n;
}

/** A malformed secret that the held service's hook keeps 400 ms. */
const HELD_SECRET = "held-validation";

describe("TokenService errors", () => {
  describe("lock wait and deadline", () => {
    let service: TestService;

    before(async () => {
      service = await startTestService({ LOCK_TIMEOUT_MS: "300" });
    });

    after(async () => {
      await service?.stop();
    });

    it("returns ABORTED when the row stays locked", async () => {
      const request = ownerRequest();
      const created = await call(
        service.client,
        service.client.createDefault,
        request,
      );
      const lock = await lockDefaultRow(service.db, request.userId);

      const err = await callError(
        service.client,
        service.client.regenerate,
        request,
      );
      await lock.rollback();

      expect(err.code).to.equal(status.ABORTED);
      expect(err.details).to.contain("row lock");
      const [row] = await tokensOf(service.db, request.userId);
      expect(row.secret_masked).to.equal(created.token!.masked);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });

    it("commits nothing once the deadline passes", async () => {
      const request = ownerRequest();
      const created = await call(
        service.client,
        service.client.createDefault,
        request,
      );
      const lock = await lockDefaultRow(service.db, request.userId);

      const err = await callError(
        service.client,
        service.client.regenerate,
        request,
        { deadline: Date.now() + 150 },
      );
      // The service's statement ends by itself at the deadline, before the
      // lock is released.
      let waiting = await waitingSessions(service.db);
      for (let i = 0; waiting > 0 && i < 50; i++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        waiting = await waitingSessions(service.db);
      }
      await lock.rollback();

      expect(err.code).to.equal(status.DEADLINE_EXCEEDED);
      expect(waiting).to.equal(0);
      const [row] = await tokensOf(service.db, request.userId);
      expect(row.secret_masked).to.equal(created.token!.masked);
      expect(await eventsOf(service.db, request.userId)).to.have.length(1);
    });
  });

  describe("a call cancelled before its handler runs", () => {
    let service: TestService;
    /** Whether the signal was aborted when a held handler first read it. */
    const abortedOnFirstUse: boolean[] = [];

    before(async () => {
      service = await startTestService(
        {},
        {
          hooks: {
            beforeHandler: async (context, request) => {
              const { userId, secret } = request as {
                userId?: string;
                secret?: string;
              };
              if (secret === HELD_SECRET) {
                await sleep(400);
              } else if (userId?.startsWith("held-")) {
                await sleep(400);
                abortedOnFirstUse.push(context.signal?.aborted === true);
              }
            },
          },
        },
      );
    });

    after(async () => {
      await service?.stop();
    });

    it("aborts the signal, commits nothing", async () => {
      const request = ownerRequest(`held-${randomUUID()}`);

      const err = await callError(
        service.client,
        service.client.createDefault,
        request,
        { deadline: Date.now() + 100 },
      );
      for (let i = 0; abortedOnFirstUse.length === 0 && i < 50; i++) {
        await sleep(50);
      }

      expect(err.code).to.equal(status.DEADLINE_EXCEEDED);
      expect(abortedOnFirstUse).to.deep.equal([true]);
      // The handler ran after the hook; the cancelled call wrote nothing.
      await sleep(100);
      expect(await tokensOf(service.db, request.userId)).to.have.length(0);
      expect(await eventsOf(service.db, request.userId)).to.have.length(0);
    });

    it("logs the code sent", async () => {
      const err = await callError(
        service.client,
        service.client.validateToken,
        { secret: HELD_SECRET },
        { deadline: Date.now() + 100 },
      );
      let line: Record<string, unknown> | undefined;
      for (let i = 0; !line && i < 50; i++) {
        await sleep(50);
        line = service.logs
          .entries()
          .find((e) => e.msg === "call finished" && e.rpc === "ValidateToken");
      }

      expect(err.code).to.equal(status.DEADLINE_EXCEEDED);
      expect(line?.code).to.equal("DEADLINE_EXCEEDED");
      // The handler itself returned OK: the secret is only malformed.
      expect(line?.handlerCode).to.equal("OK");
    });
  });

  describe("database unreachable", () => {
    let service: TestService;
    let proxy: net.Server;
    const sockets = new Set<net.Socket>();

    before(async () => {
      proxy = net.createServer((client) => {
        const server = new URL(ADMIN_DATABASE_URL);
        const upstream = net.connect(
          Number(server.port || 5432),
          server.hostname,
        );
        for (const socket of [client, upstream]) {
          sockets.add(socket);
          socket.on("close", () => sockets.delete(socket));
          socket.on("error", () => socket.destroy());
        }
        client.pipe(upstream).pipe(client);
      });
      await new Promise<void>((resolve) =>
        proxy.listen(0, "127.0.0.1", resolve),
      );
      const { port } = proxy.address() as net.AddressInfo;
      service = await startTestService(
        {},
        { routeDatabaseUrl: (url) => void (url.port = String(port)) },
      );
    });

    after(async () => {
      await service?.stop();
    });

    it("returns UNAVAILABLE and recovers", async () => {
      const request = ownerRequest();
      await call(service.client, service.client.getOrProvision, request);
      const { port } = proxy.address() as net.AddressInfo;

      await new Promise<void>((resolve) => {
        proxy.close(() => resolve());
        sockets.forEach((socket) => socket.destroy());
      });
      const err = await callError(
        service.client,
        service.client.regenerate,
        request,
      );
      await new Promise<void>((resolve) =>
        proxy.listen(port, "127.0.0.1", resolve),
      );
      const after = await call(
        service.client,
        service.client.regenerate,
        request,
      );

      expect(err.code).to.equal(status.UNAVAILABLE);
      expect(err.details).to.contain("retry");
      expect(after.created).to.equal(false);
    });
  });

  describe("unexpected failure", () => {
    let service: TestService;

    before(async () => {
      service = await startTestService();
    });

    after(async () => {
      await service?.stop();
    });

    it("returns INTERNAL and rolls back", async () => {
      const request = ownerRequest();
      await service.db.raw(
        "alter table api_token_events rename to events_moved",
      );

      let err;
      try {
        err = await callError(
          service.client,
          service.client.createDefault,
          request,
        );
      } finally {
        await service.db.raw(
          "alter table events_moved rename to api_token_events",
        );
      }

      expect(err.code).to.equal(status.INTERNAL);
      expect(err.details).to.match(/error id [0-9a-f-]{36}/);
      expect(err.details).to.not.match(/insert|api_token|relation/i);
      expect(await tokensOf(service.db, request.userId)).to.have.length(0);
      const errorId = /error id ([0-9a-f-]{36})/.exec(err.details)![1];
      const logged = service.logs.entries().find((e) => e.errorId === errorId);
      expect(logged, "log line with the error id").to.not.equal(undefined);
    });
  });
});
