/**
 * `npm run bench:compare [-- OTHER_CHECKOUT]`: measures one workload on
 * this build of the service, on the empty-RPC floor and, when given, on
 * the build of another checkout, in short slices that take turns. The
 * shared machine's load drifts over seconds, so slices next to each other
 * see nearly the same load, and ratios taken within one cycle of slices
 * vary far less than those of `npm run bench`, whose windows last 8 s.
 *
 * A ValidateToken workload on at most 10k rows also runs against
 * bench/bare-server.ts, a grpc-js server of the same messages that does
 * none of the service's work: the ratio within reach of any handler.
 *
 * OTHER_CHECKOUT needs `npm ci` and `npm run build` done. Both builds run
 * with this checkout's start flags, on one seeded database, and with
 * BENCH_SERVICE_NODE_OPTIONS; BENCH_OTHER_NODE_OPTIONS replaces it for the
 * other build, so `npm run bench:compare -- .` compares two flag sets.
 */
import type { ChildProcess } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  logProgress as log,
  runJob,
  withCleanUp,
  startBareServer,
  startEmptyServer,
  startLoadWorker,
} from "./children";
import type { LoadShape } from "./closed-loop";
import type { LoadJob } from "./load-worker";
import { findMethod, SCENARIOS } from "./scenarios";
import { createBenchKeys, dropBenchDatabase, seedBenchDatabase } from "./seed";
import {
  benchServiceEnv,
  readCpuMs,
  type ServiceProcess,
  startServiceProcess,
} from "./service-process";
import { loadBenchSettings } from "./settings";
import { median } from "./stats";
import { BARE_SERVER_USERS, formatRows, type TableShape } from "./table";

const DEFAULT_SCENARIO = "ValidateToken, cache hit";

/** Seconds of each slice spent before its calls are counted. */
const SLICE_WARMUP_S = 0.2;

/** A server that takes slices, and what its slices measured. */
interface Contender {
  label: string;
  pid: number;
  job: (firstSequence: number, shape: LoadShape) => LoadJob;
  /** Calls sent so far, so that each slice goes on with new requests. */
  sequence: number;
  callsPerS: number[];
  cpuUsPerCall: number[];
}

/** Returns the value at `fraction` of the sorted values, by nearest rank. */
function quantile(values: number[], fraction: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil(fraction * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Formats the median and the middle half of ratios taken slice by slice. */
function formatRatios(ratios: number[]): string {
  return (
    `${median(ratios).toFixed(2)} ` +
    `(${quantile(ratios, 0.25).toFixed(2)} to ${quantile(ratios, 0.75).toFixed(2)})`
  );
}

async function runSlice(
  worker: ChildProcess,
  contender: Contender,
  shape: LoadShape,
): Promise<{ callsPerS: number; cpuUsPerCall: number }> {
  const cpuBefore = readCpuMs(contender.pid);
  const result = await runJob(worker, contender.job(contender.sequence, shape));
  const cpuMs = readCpuMs(contender.pid) - cpuBefore;
  contender.sequence += result.totalCalls;
  if (result.errors > 0) {
    throw new Error(
      `${contender.label}: ${result.errors} calls failed: ${result.firstError}`,
    );
  }
  return {
    callsPerS: result.callsPerS,
    cpuUsPerCall: (cpuMs * 1000) / result.totalCalls,
  };
}

async function main(): Promise<void> {
  const settings = loadBenchSettings();
  const otherCheckout = process.argv[2];
  const requested = settings.only[0] ?? DEFAULT_SCENARIO.toLowerCase();
  const scenario = SCENARIOS.find((entry) =>
    entry.name.toLowerCase().includes(requested),
  );
  if (!scenario || !findMethod(scenario.method)) {
    throw new Error(
      `BENCH_ONLY=${JSON.stringify(requested)} names no runnable scenario; ` +
        `use part of one of: ${SCENARIOS.map((s) => s.name).join("; ")}`,
    );
  }

  const rows = settings.tableSizes[0];
  const table: TableShape = {
    rows,
    benchUsers: Math.min(settings.benchUsers, rows),
  };
  const databaseName = `token_service_bench_${process.pid}_compare`;
  const workDir = fs.mkdtempSync(
    path.join(os.tmpdir(), "token-service-compare-"),
  );
  const keys = createBenchKeys();
  const children: ChildProcess[] = [];
  const services: ServiceProcess[] = [];

  await withCleanUp(
    async () => {
      const databaseUrl = await seedBenchDatabase(
        settings.adminUrl,
        databaseName,
        table,
        keys,
      );
      const builds = [
        {
          label: "this build",
          checkout: process.cwd(),
          nodeOptions: settings.serviceNodeOptions,
        },
      ];
      if (otherCheckout) {
        const otherOptions = process.env.BENCH_OTHER_NODE_OPTIONS;
        builds.push({
          label:
            `build in ${otherCheckout}` +
            (otherOptions === undefined ? "" : ` with ${otherOptions}`),
          checkout: path.resolve(otherCheckout),
          nodeOptions:
            otherOptions === undefined
              ? settings.serviceNodeOptions
              : otherOptions.split(/\s+/).filter((flag) => flag !== ""),
        });
      }

      const worker = startLoadWorker();
      children.push(worker);
      const empty = await startEmptyServer();
      children.push(empty.child);
      const contenders: Contender[] = [
        {
          label: "empty unary RPC (floor)",
          pid: empty.child.pid!,
          job: (_, shape) => ({ kind: "empty", address: empty.address, shape }),
          sequence: 0,
          callsPerS: [],
          cpuUsPerCall: [],
        },
      ];
      const scenarioJob =
        (address: string) =>
        (firstSequence: number, shape: LoadShape): LoadJob => ({
          kind: "scenario",
          address,
          scenario: scenario.name,
          table,
          shape,
          firstSequence,
        });
      if (scenario.method === "validateToken" && rows <= BARE_SERVER_USERS) {
        const bare = await startBareServer();
        children.push(bare.child);
        contenders.push({
          label: "bare ValidateToken handler",
          pid: bare.child.pid!,
          job: scenarioJob(bare.address),
          sequence: 0,
          callsPerS: [],
          cpuUsPerCall: [],
        });
      }
      const builtServices: Contender[] = [];
      for (const [index, build] of builds.entries()) {
        const service = await startServiceProcess(
          benchServiceEnv(databaseUrl, keys, settings.poolMax),
          path.join(workDir, `service-${index}.log`),
          build.nodeOptions,
          path.join(build.checkout, "dist", "main.js"),
        );
        services.push(service);
        const contender: Contender = {
          label: build.label,
          pid: service.pid,
          job: scenarioJob(service.address),
          sequence: 0,
          callsPerS: [],
          cpuUsPerCall: [],
        };
        contenders.push(contender);
        builtServices.push(contender);
      }

      log(
        `warming up ${contenders.length} servers, ${settings.warmupS} s each`,
      );
      for (const contender of contenders) {
        await runSlice(worker, contender, {
          concurrency: settings.concurrency,
          warmupS: 0,
          durationS: settings.warmupS,
        });
      }

      const shape: LoadShape = {
        concurrency: settings.concurrency,
        warmupS: SLICE_WARMUP_S,
        durationS: settings.sliceS,
      };
      for (let cycle = 0; cycle < settings.slices; cycle++) {
        // Each cycle starts with the next server, so that no server always
        // has the same place in the cycle.
        for (let turn = 0; turn < contenders.length; turn++) {
          const contender = contenders[(cycle + turn) % contenders.length];
          const slice = await runSlice(worker, contender, shape);
          contender.callsPerS.push(slice.callsPerS);
          contender.cpuUsPerCall.push(slice.cpuUsPerCall);
        }
      }

      const floor = contenders[0];
      const lines = [
        `## Compared ${new Date().toISOString().slice(0, 16)}Z: ` +
          `${scenario.name}, ${formatRows(rows)} rows`,
        "",
        `- command: \`${process.argv.slice(2).length > 0 ? `npm run bench:compare -- ${process.argv.slice(2).join(" ")}` : "npm run bench:compare"}\` ` +
          `with ${Object.entries(process.env)
            .filter(([name]) => name.startsWith("BENCH_"))
            .map(([name, value]) => `${name}=${value}`)
            .join(" ")}`,
        `- ${settings.slices} cycles of ${settings.sliceS} s slices, ` +
          `${settings.concurrency} callers, load average at the end ` +
          os
            .loadavg()
            .map((l) => l.toFixed(2))
            .join(", "),
        "",
        "| server | calls/s (median) | x floor, median (middle half) | server CPU µs/call (median) |",
        "| --- | --- | --- | --- |",
      ];
      for (const contender of contenders) {
        const ratios = contender.callsPerS.map(
          (callsPerS, cycle) => callsPerS / floor.callsPerS[cycle],
        );
        lines.push(
          `| ${contender.label} | ${median(contender.callsPerS).toFixed(0)} | ` +
            `${formatRatios(ratios)} | ${median(contender.cpuUsPerCall).toFixed(0)} |`,
        );
      }
      if (builtServices.length === 2) {
        const [own, other] = builtServices;
        const rateRatios = own.callsPerS.map((c, i) => c / other.callsPerS[i]);
        const cpuRatios = own.cpuUsPerCall.map(
          (c, i) => c / other.cpuUsPerCall[i],
        );
        lines.push(
          "",
          `This build against the other, cycle by cycle: calls/s ` +
            `${formatRatios(rateRatios)}, server CPU per call ` +
            `${formatRatios(cpuRatios)}.`,
        );
      }
      process.stdout.write(lines.join("\n") + "\n");
    },
    async () => {
      for (const service of services) {
        await service.stop();
      }
      for (const child of children) {
        if (child.connected) {
          child.disconnect();
        }
      }
      await dropBenchDatabase(settings.adminUrl, databaseName);
      fs.rmSync(workDir, { recursive: true, force: true });
    },
  );
}

main().catch((err: unknown) => {
  process.stderr.write(
    `bench:compare failed: ${err instanceof Error ? err.stack : String(err)}\n`,
  );
  process.exitCode = 1;
});
