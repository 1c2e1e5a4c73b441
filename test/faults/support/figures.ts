import { status, type ServiceError } from "@grpc/grpc-js";

/** How one call ended: its value, or the status code it failed with. */
export type Outcome<T> =
  { ok: true; value: T } | { ok: false; code: status; message: string };

/** Returns the status name of an outcome: `OK`, `ABORTED` and so on. */
export function codeOf(outcome: Outcome<unknown>): string {
  return outcome.ok ? "OK" : status[outcome.code];
}

/** Figures of one fault case, printed as one line when it ends. */
export class CaseFigures {
  private readonly startedAt = performance.now();
  private readonly codes = new Map<string, number>();
  calls = 0;

  constructor(readonly name: string) {}

  /** Awaits a call and records its status code. */
  async settle<T>(promise: Promise<T>): Promise<Outcome<T>> {
    this.calls++;
    try {
      const value = await promise;
      this.count("OK");
      return { ok: true, value };
    } catch (err) {
      const serviceError = err as ServiceError;
      if (typeof serviceError.code !== "number") {
        throw err;
      }
      this.count(status[serviceError.code]);
      return {
        ok: false,
        code: serviceError.code,
        message: serviceError.details,
      };
    }
  }

  /** Records a status code of a call made some other way. */
  count(code: string): void {
    this.codes.set(code, (this.codes.get(code) ?? 0) + 1);
  }

  /** Number of calls that ended with the code, such as `OK`. */
  countOf(code: string): number {
    return this.codes.get(code) ?? 0;
  }

  /** Status codes other than OK that occurred. */
  errorCodes(): string[] {
    return [...this.codes.keys()].filter((code) => code !== "OK");
  }

  /** Prints calls, errors by code, tokens, audit events and seconds. */
  print(stored: { tokens: number; events: number }): void {
    const errors = [...this.codes]
      .filter(([code]) => code !== "OK")
      .map(([code, count]) => `${code}=${count}`)
      .join(",");
    const seconds = ((performance.now() - this.startedAt) / 1000).toFixed(2);
    console.log(
      `    [figures] ${this.name}: calls=${this.calls} ` +
        `ok=${this.countOf("OK")} errors={${errors}} ` +
        `tokens=${stored.tokens} events=${stored.events} seconds=${seconds}`,
    );
  }
}
