import { median, type LoadResult } from "./stats";
import { formatRows } from "./table";

/** One measurement of a workload in one round. */
export interface Measurement {
  round: number;
  result: LoadResult;
  /** Empty-RPC calls/s measured in the same round. */
  floorCallsPerS: number;
  /** Committed and rolled-back transactions per call, from pg_stat_database. */
  transactionsPerCall?: number;
  /** CPU time of the gRPC server process per call, in microseconds. */
  serverCpuUsPerCall?: number;
  /** CPU time of the load worker per call, in microseconds. */
  clientCpuUsPerCall?: number;
  /** CPU time of every PostgreSQL process per call, in microseconds. */
  databaseCpuUsPerCall?: number;
}

/** A row of the report: a workload on one table size, over all rounds. */
export interface WorkloadRow {
  workload: string;
  /** Stored tokens, or undefined for the empty RPC. */
  rows?: number;
  measurements: Measurement[];
}

/** Medians of a row over its rounds, ratios per round first. */
export interface RowSummary {
  callsPerS: number;
  minCallsPerS: number;
  maxCallsPerS: number;
  floorRatio: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  transactionsPerCall?: number;
  serverCpuUsPerCall?: number;
  clientCpuUsPerCall?: number;
  databaseCpuUsPerCall?: number;
  errors: number;
}

/** Summarizes a row: the median of each figure over the rounds. */
export function summarizeRow(row: WorkloadRow): RowSummary {
  const of = (pick: (m: Measurement) => number) =>
    median(row.measurements.map(pick));
  const rates = row.measurements.map((m) => m.result.callsPerS);
  const medianOfDefined = (pick: (m: Measurement) => number | undefined) => {
    const values = row.measurements
      .map(pick)
      .filter((value): value is number => value !== undefined);
    return values.length > 0 ? median(values) : undefined;
  };

  return {
    callsPerS: median(rates),
    minCallsPerS: Math.min(...rates),
    maxCallsPerS: Math.max(...rates),
    floorRatio: of((m) => m.result.callsPerS / m.floorCallsPerS),
    p50Ms: of((m) => m.result.p50Ms),
    p95Ms: of((m) => m.result.p95Ms),
    p99Ms: of((m) => m.result.p99Ms),
    transactionsPerCall: medianOfDefined((m) => m.transactionsPerCall),
    serverCpuUsPerCall: medianOfDefined((m) => m.serverCpuUsPerCall),
    clientCpuUsPerCall: medianOfDefined((m) => m.clientCpuUsPerCall),
    databaseCpuUsPerCall: medianOfDefined((m) => m.databaseCpuUsPerCall),
    errors: row.measurements.reduce((sum, m) => sum + m.result.errors, 0),
  };
}

function fixed(value: number | undefined, digits: number): string {
  return value === undefined || Number.isNaN(value)
    ? "-"
    : value.toFixed(digits);
}

/** Formats the rows as a Markdown table. */
export function formatTable(rows: WorkloadRow[]): string {
  const lines = [
    "| workload | rows | calls/s (median) | min-max | x floor | p50 ms | " +
      "p95 ms | p99 ms | p99/p50 | tx/call | server CPU µs/call | " +
      "client CPU µs/call | db CPU µs/call | errors |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- " +
      "| --- | --- |",
  ];
  for (const row of rows) {
    const s = summarizeRow(row);
    lines.push(
      `| ${row.workload} | ${row.rows ? formatRows(row.rows) : "-"} | ` +
        `${fixed(s.callsPerS, 0)} | ` +
        `${fixed(s.minCallsPerS, 0)}-${fixed(s.maxCallsPerS, 0)} | ` +
        `${fixed(s.floorRatio, 2)} | ${fixed(s.p50Ms, 2)} | ` +
        `${fixed(s.p95Ms, 2)} | ${fixed(s.p99Ms, 2)} | ` +
        `${fixed(s.p99Ms / s.p50Ms, 1)} | ` +
        `${fixed(s.transactionsPerCall, 2)} | ` +
        `${fixed(s.serverCpuUsPerCall, 0)} | ` +
        `${fixed(s.clientCpuUsPerCall, 0)} | ` +
        `${fixed(s.databaseCpuUsPerCall, 0)} | ${s.errors} |`,
    );
  }
  return lines.join("\n");
}

/** A target of the issue, checked against the summaries. */
export interface TargetCheck {
  target: string;
  measured: string;
  met: boolean;
}

/** Formats target checks as a Markdown table. */
export function formatTargets(checks: TargetCheck[]): string {
  const lines = ["| target | measured | met |", "| --- | --- | --- |"];
  for (const check of checks) {
    lines.push(
      `| ${check.target} | ${check.measured} | ${check.met ? "yes" : "NO"} |`,
    );
  }
  return lines.join("\n");
}
