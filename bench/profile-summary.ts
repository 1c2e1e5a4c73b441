/**
 * Summarizes a V8 .cpuprofile (from `node --cpu-prof`) as the functions
 * with the most self time. As a script: tsx bench/profile-summary.ts FILE [N].
 */
import fs from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: {
    functionName: string;
    url: string;
    lineNumber: number;
  };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/**
 * Returns the `limit` functions with the most self time, one a line, each
 * with its share of the time the process was not idle.
 */
export function summarizeProfile(file: string, limit: number): string {
  const profile = JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile;
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfUs = new Map<string, number>();
  let totalUs = 0;

  // Idle time is time the process waited, not CPU it spent.
  profile.samples.forEach((id, index) => {
    const frame = nodes.get(id)!.callFrame;
    if (frame.functionName === "(idle)") {
      return;
    }
    const where = frame.url.replace(/^.*\/node_modules\//, "");
    const name = `${frame.functionName || "(anonymous)"} ${where}:${frame.lineNumber + 1}`;
    const delta = profile.timeDeltas[index] ?? 0;
    selfUs.set(name, (selfUs.get(name) ?? 0) + delta);
    totalUs += delta;
  });

  return [...selfUs.entries()]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(
      ([name, us]) =>
        `${((100 * us) / totalUs).toFixed(1).padStart(5)}%  ${name}`,
    )
    .join("\n");
}

if (require.main === module) {
  const [file, limit] = process.argv.slice(2);
  if (!file) {
    process.stderr.write(
      "usage: tsx bench/profile-summary.ts FILE.cpuprofile [N]\n",
    );
    process.exit(2);
  }
  process.stdout.write(summarizeProfile(file, Number(limit) || 30) + "\n");
}
