import {
  type ClientReadableStream,
  credentials,
  makeClientConstructor,
  type ServiceError,
} from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";

interface HealthResponse {
  status: string;
}

interface RawHealthClient {
  check(
    request: { service: string },
    options: { deadline: number },
    callback: (err: ServiceError | null, response: HealthResponse) => void,
  ): void;
  watch(request: { service: string }): ClientReadableStream<HealthResponse>;
  close(): void;
}

const HealthClient = makeClientConstructor(healthService, "Health");

/** A grpc.health.v1.Health client for a server on 127.0.0.1. */
export class HealthProbe {
  private readonly client: RawHealthClient;

  constructor(port: number) {
    this.client = new HealthClient(
      `127.0.0.1:${port}`,
      credentials.createInsecure(),
    ) as unknown as RawHealthClient;
  }

  /** Returns the serving status of the whole server, or the error code. */
  check(timeoutMs = 5000): Promise<string> {
    return new Promise((resolve) => {
      this.client.check(
        { service: "" },
        { deadline: Date.now() + timeoutMs },
        (err, response) => resolve(err ? `error ${err.code}` : response.status),
      );
    });
  }

  /** Streams status changes of the whole server to `onStatus`. */
  watch(onStatus: (status: string) => void): ClientReadableStream<unknown> {
    const call = this.client.watch({ service: "" });
    call.on("data", (response: HealthResponse) => onStatus(response.status));
    call.on("error", () => undefined);
    return call;
  }

  close(): void {
    this.client.close();
  }
}
