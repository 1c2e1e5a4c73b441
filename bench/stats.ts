/** Throughput and latency of one measured window. */
export interface LoadResult {
  /** Calls that completed inside the measured window. */
  calls: number;
  /** Calls that failed inside the measured window; not in `calls`. */
  errors: number;
  /** The first error message seen, to print when `errors` is not zero. */
  firstError?: string;
  /** Calls completed during warm-up and the window together. */
  totalCalls: number;
  durationS: number;
  callsPerS: number;
  p50Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
}

/**
 * Returns the value below which `fraction` of the sorted samples lie, by the
 * nearest-rank method.
 */
export function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) {
    return Number.NaN;
  }
  const rank = Math.ceil(fraction * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

/** Collects call latencies in milliseconds, growing its buffer as needed. */
export class LatencyRecorder {
  private samples = new Float64Array(1 << 16);
  private count = 0;

  add(latencyMs: number): void {
    if (this.count === this.samples.length) {
      const grown = new Float64Array(this.samples.length * 2);
      grown.set(this.samples);
      this.samples = grown;
    }
    this.samples[this.count++] = latencyMs;
  }

  /** Sorts the samples and returns p50, p95, p99 and the maximum. */
  summarize(): Pick<LoadResult, "p50Ms" | "p95Ms" | "p99Ms" | "maxMs"> {
    const sorted = this.samples.slice(0, this.count).sort();
    return {
      p50Ms: percentile(sorted, 0.5),
      p95Ms: percentile(sorted, 0.95),
      p99Ms: percentile(sorted, 0.99),
      maxMs: sorted.length > 0 ? sorted[sorted.length - 1] : Number.NaN,
    };
  }
}

/** Returns the median of a list of numbers, NaN for an empty one. */
export function median(values: number[]): number {
  if (values.length === 0) {
    return Number.NaN;
  }
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
}
