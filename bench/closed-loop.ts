import { LatencyRecorder, type LoadResult } from "./stats";

/** How long and how wide a closed-loop load runs. */
export interface LoadShape {
  /** Callers, each with one call in flight at a time. */
  concurrency: number;
  /** Seconds of calls made before measuring starts; they are not counted. */
  warmupS: number;
  /** Seconds of the measured window. */
  durationS: number;
}

/** One call of the workload; `sequence` counts calls across all callers. */
export type Call = (sequence: number) => Promise<void>;

/**
 * Runs `call` from `concurrency` callers, each starting its next call as soon
 * as the last one ends, for the warm-up and then the measured window. Only
 * calls that end inside the window count; calls still in flight when it
 * closes are awaited but not counted.
 */
export async function runClosedLoop(
  shape: LoadShape,
  call: Call,
): Promise<LoadResult> {
  const recorder = new LatencyRecorder();
  const startedAt = performance.now();
  const windowStart = startedAt + shape.warmupS * 1000;
  const windowEnd = windowStart + shape.durationS * 1000;

  let sequence = 0;
  let calls = 0;
  let errors = 0;
  let totalCalls = 0;
  let firstError: string | undefined;

  const caller = async () => {
    while (performance.now() < windowEnd) {
      const callStart = performance.now();
      let failed = false;
      try {
        await call(sequence++);
      } catch (err) {
        failed = true;
        firstError ??= err instanceof Error ? err.message : String(err);
      }

      const callEnd = performance.now();
      totalCalls++;
      if (callEnd < windowStart || callEnd > windowEnd) {
        continue;
      }
      if (failed) {
        errors++;
      } else {
        calls++;
        recorder.add(callEnd - callStart);
      }
    }
  };
  await Promise.all(Array.from({ length: shape.concurrency }, caller));

  return {
    calls,
    errors,
    firstError,
    totalCalls,
    durationS: shape.durationS,
    callsPerS: calls / shape.durationS,
    ...recorder.summarize(),
  };
}
