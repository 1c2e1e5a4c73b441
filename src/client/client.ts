import {
  type ChannelCredentials,
  type ChannelOptions,
  Client,
  credentials,
  Metadata,
  type ServiceError,
} from "@grpc/grpc-js";
import {
  CreateDefaultRequest,
  type DeepPartial,
  DeleteRequest,
  GetDefaultRequest,
  GetOrProvisionRequest,
  ListAuditEventsRequest,
  RegenerateRequest,
  TokenServiceService,
  ValidateTokenRequest,
} from "../generated/token/v1/token_service";
import type { Logger } from "../logger";
import { toTokenServiceError } from "./errors";
import {
  DEFAULT_RETRY_POLICY,
  type RetryPolicy,
  retryUnavailable,
  validateRetryPolicy,
} from "./retry";

/** Metadata key in which the calling service names itself. */
export const CLIENT_SERVICE_KEY = "x-client-service";

/** The rule the service applies to the `x-client-service` value. */
const CLIENT_SERVICE_PATTERN = /^[A-Za-z0-9._:/@-]{1,128}$/;

/** Deadline of a call when neither the client nor the call sets one. */
export const DEFAULT_TIMEOUT_MS = 2000;

/** The shape of a generated unary method definition that the client uses. */
interface UnaryMethod<Req, Res> {
  path: string;
  requestSerialize(value: Req): Buffer;
  responseDeserialize(value: Buffer): Res;
}

/**
 * Pairs a generated method definition with its request message type, so
 * that callers may leave request fields unset: `fromPartial` fills them
 * with their defaults before encoding. A field added to a request later
 * then breaks no caller.
 */
function unary<Req, Res>(
  definition: UnaryMethod<Req, Res>,
  requestType: { fromPartial(object: DeepPartial<Req>): Req },
): UnaryMethod<DeepPartial<Req>, Res> {
  return {
    path: definition.path,
    requestSerialize: (value) =>
      definition.requestSerialize(requestType.fromPartial(value)),
    responseDeserialize: definition.responseDeserialize,
  };
}

/**
 * The RPCs the client offers. Adding an RPC that the generated code has is
 * one line here, and the method then appears on the client with its
 * request and response types.
 */
const UNARY_METHODS = {
  createDefault: unary(TokenServiceService.createDefault, CreateDefaultRequest),
  regenerate: unary(TokenServiceService.regenerate, RegenerateRequest),
  getOrProvision: unary(
    TokenServiceService.getOrProvision,
    GetOrProvisionRequest,
  ),
  delete: unary(TokenServiceService.delete, DeleteRequest),
  getDefault: unary(TokenServiceService.getDefault, GetDefaultRequest),
  validateToken: unary(TokenServiceService.validateToken, ValidateTokenRequest),
  listAuditEvents: unary(
    TokenServiceService.listAuditEvents,
    ListAuditEventsRequest,
  ),
};

/** TLS settings. With every field unset, the server must chain to a system CA. */
export interface TlsOptions {
  /** PEM root certificates that the server's certificate must chain to. */
  rootCerts?: Buffer;
  /** PEM private key of the client certificate, for mutual TLS. */
  privateKey?: Buffer;
  /** PEM client certificate chain, for mutual TLS. */
  certChain?: Buffer;
}

/** Settings of a client, fixed when it is created. */
export interface TokenServiceClientOptions {
  /** The service's `host:port`, or any target grpc-js accepts. */
  address: string;
  /**
   * Name of the calling service, sent as `x-client-service` metadata and
   * stored in every audit event: 1 to 128 letters, digits or . _ : / @ -.
   */
  clientService: string;
  /** TLS settings. Unset, the channel is plain text. */
  tls?: TlsOptions;
  /** Deadline of each call in milliseconds, from its start. Default 2000. */
  timeoutMs?: number;
  /** Retries of UNAVAILABLE. Unset fields keep DEFAULT_RETRY_POLICY's. */
  retry?: Partial<RetryPolicy>;
  /**
   * Channel options passed to grpc-js. NOTE: a call that fails because the
   * channel cannot connect is retried, but the channel itself reconnects
   * only after its own backoff (grpc-js 1.14 default: 1 s, then growing),
   * which `grpc.initial_reconnect_backoff_ms` lowers.
   */
  channelOptions?: ChannelOptions;
  /** Logger for retries. Unset, retries are not logged. */
  log?: Logger;
}

/** Settings of one call. */
export interface CallSettings {
  /** Deadline in milliseconds from now, in place of the client's default. */
  timeoutMs?: number;
}

type UnaryMethods = typeof UNARY_METHODS;

/** One promise-based method for each entry of UNARY_METHODS. */
export type TokenServiceMethods = {
  [Name in keyof UnaryMethods]: UnaryMethods[Name] extends UnaryMethod<
    infer Req,
    infer Res
  >
    ? (request: Req, settings?: CallSettings) => Promise<Res>
    : never;
};

/**
 * A TokenService client with promise-based methods. A call that ends with a
 * status other than OK rejects with a TokenServiceError or a subclass.
 */
export interface TypedTokenServiceClient extends TokenServiceMethods {
  /** Closes the channel, after which every call fails. */
  close(): void;
}

function readTimeoutMs(timeoutMs: number | undefined, name: string): number {
  const value = timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`${name} must be a positive number of milliseconds`);
  }
  return value;
}

function createCredentials(tls: TlsOptions | undefined): ChannelCredentials {
  if (!tls) {
    return credentials.createInsecure();
  }
  return credentials.createSsl(
    tls.rootCerts ?? null,
    tls.privateKey ?? null,
    tls.certChain ?? null,
  );
}

/** Makes one attempt of a unary call and awaits its response. */
function callOnce<Req, Res>(
  channel: Client,
  method: UnaryMethod<Req, Res>,
  request: Req,
  metadata: Metadata,
  deadline: number,
  methodName: string,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    channel.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      request,
      metadata,
      { deadline },
      (err: ServiceError | null, response?: Res) => {
        if (err) {
          reject(toTokenServiceError(err, methodName));
        } else {
          resolve(response as Res);
        }
      },
    );
  });
}

/**
 * Creates a TokenService client. Each call gets a deadline, names the
 * caller in `x-client-service` metadata, is retried with backoff while it
 * ends with UNAVAILABLE, and rejects with a typed error.
 *
 * @throws RangeError or TypeError when an option is invalid.
 */
export function createTokenServiceClient(
  options: TokenServiceClientOptions,
): TypedTokenServiceClient {
  if (!CLIENT_SERVICE_PATTERN.test(options.clientService)) {
    throw new TypeError(
      `clientService ${JSON.stringify(options.clientService)} is invalid: ` +
        `use 1 to 128 letters, digits or . _ : / @ -`,
    );
  }
  const defaultTimeoutMs = readTimeoutMs(options.timeoutMs, "timeoutMs");
  const policy = { ...DEFAULT_RETRY_POLICY, ...options.retry };
  validateRetryPolicy(policy);

  const channel = new Client(
    options.address,
    createCredentials(options.tls),
    options.channelOptions,
  );

  // Async, so that an invalid setting rejects like a failed call does.
  const invoke = async <Req, Res>(
    methodName: string,
    method: UnaryMethod<Req, Res>,
    request: Req,
    settings: CallSettings = {},
  ): Promise<Res> => {
    const timeoutMs =
      settings.timeoutMs === undefined
        ? defaultTimeoutMs
        : readTimeoutMs(settings.timeoutMs, "settings.timeoutMs");
    // One deadline covers every attempt, so retries never extend the call.
    const deadline = Date.now() + timeoutMs;

    return retryUnavailable(
      { method: methodName, policy, deadline, log: options.log },
      () => {
        const metadata = new Metadata();
        metadata.set(CLIENT_SERVICE_KEY, options.clientService);
        return callOnce(
          channel,
          method,
          request,
          metadata,
          deadline,
          methodName,
        );
      },
    );
  };

  const methods: Record<string, unknown> = {};
  for (const [name, method] of Object.entries(UNARY_METHODS)) {
    const methodName = method.path.slice(method.path.lastIndexOf("/") + 1);
    methods[name] = (request: unknown, settings?: CallSettings) =>
      invoke(
        methodName,
        method as UnaryMethod<unknown, unknown>,
        request,
        settings,
      );
  }

  return {
    ...(methods as TokenServiceMethods),
    close: () => channel.close(),
  };
}
