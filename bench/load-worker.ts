/**
 * The load generator: a child process that runs one closed-loop load at a
 * time on request from the bench over IPC, so that its CPU use is not
 * counted against the service or the bench's own bookkeeping.
 */
import {
  type Client,
  credentials,
  makeGenericClientConstructor,
  Metadata,
  type MethodDefinition,
} from "@grpc/grpc-js";
import pg from "pg";
import { type LoadShape, runClosedLoop } from "./closed-loop";
import { EMPTY_METHOD } from "./empty-service";
import { findMethod, SCENARIOS } from "./scenarios";
import { bindUser, type CapturedQuery } from "./pgbench";
import type { LoadResult } from "./stats";
import { sealedUserNumber, type TableShape } from "./table";

/** Calls of a TokenService scenario against a running service. */
export interface ScenarioJob {
  kind: "scenario";
  address: string;
  scenario: string;
  table: TableShape;
  shape: LoadShape;
  /**
   * Sequence number of the job's first call, so that jobs run one after
   * another can go on where the last stopped; 0 when unset.
   */
  firstSequence?: number;
}

/** Empty unary calls against the trivial server. */
export interface EmptyRpcJob {
  kind: "empty";
  address: string;
  shape: LoadShape;
}

/**
 * One statement a call, through a pg pool of `poolMax` connections, with
 * the user id of the call bound as bindUser does.
 */
export interface PgJob extends CapturedQuery {
  kind: "pg";
  databaseUrl: string;
  poolMax: number;
  table: TableShape;
  shape: LoadShape;
}

export type LoadJob = ScenarioJob | EmptyRpcJob | PgJob;

/** The worker's reply to one job. */
export type LoadReply = { result: LoadResult } | { error: string };

/** Deadline of each call; far above any expected latency. */
const CALL_DEADLINE_MS = 10_000;

const clients = new Map<string, Client>();

function clientFor(address: string): Client {
  let client = clients.get(address);
  if (!client) {
    const GenericClient = makeGenericClientConstructor({}, "BenchClient");
    client = new GenericClient(address, credentials.createInsecure());
    clients.set(address, client);
  }
  return client;
}

function callUnary<Req, Res>(
  client: Client,
  method: MethodDefinition<Req, Res>,
  request: Req,
  metadata: Metadata,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      metadata,
      { deadline: Date.now() + CALL_DEADLINE_MS },
      (err, response) => (err ? reject(err) : resolve(response!)),
    );
  });
}

function runScenario(job: ScenarioJob): Promise<LoadResult> {
  const scenario = SCENARIOS.find((entry) => entry.name === job.scenario);
  const method = scenario && findMethod(scenario.method);
  if (!scenario || !method) {
    throw new Error(`scenario ${JSON.stringify(job.scenario)} is not runnable`);
  }

  const client = clientFor(job.address);
  const metadata = new Metadata();
  metadata.set("x-client-service", "token-service-bench");
  const first = job.firstSequence ?? 0;
  return runClosedLoop(job.shape, async (jobSequence) => {
    const sequence = first + jobSequence;
    const request = scenario.request(sequence, job.table);
    const response = await callUnary(client, method, request, metadata);
    scenario.check(response, sequence, job.table);
  });
}

function runEmptyRpc(job: EmptyRpcJob): Promise<LoadResult> {
  const client = clientFor(job.address);
  const request = Buffer.alloc(0);
  const metadata = new Metadata();
  return runClosedLoop(job.shape, async () => {
    await callUnary(client, EMPTY_METHOD, request, metadata);
  });
}

async function runPg(job: PgJob): Promise<LoadResult> {
  const pool = new pg.Pool({
    connectionString: job.databaseUrl,
    max: job.poolMax,
    application_name: "token-service-bench",
  });
  const { benchUsers } = job.table;

  try {
    return await runClosedLoop(job.shape, async (sequence) => {
      const userId = String(sealedUserNumber(job.table, sequence % benchUsers));
      const result = await pool.query({
        name: job.name,
        text: job.sql,
        values: bindUser(job, userId),
      });
      if (result.rowCount !== 1) {
        throw new Error(`expected one row for user ${userId}`);
      }
    });
  } finally {
    await pool.end();
  }
}

function run(job: LoadJob): Promise<LoadResult> {
  switch (job.kind) {
    case "scenario":
      return runScenario(job);
    case "empty":
      return runEmptyRpc(job);
    case "pg":
      return runPg(job);
  }
}

process.on("message", (job: LoadJob) => {
  run(job).then(
    (result) => process.send!({ result } satisfies LoadReply),
    (err: unknown) =>
      process.send!({
        error: err instanceof Error ? err.message : String(err),
      } satisfies LoadReply),
  );
});

process.on("disconnect", () => {
  for (const client of clients.values()) {
    client.close();
  }
  process.exit(0);
});
