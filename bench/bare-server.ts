/**
 * A child process serving ValidateToken from the generated TokenService
 * definition. Its handler only looks the secret up in a map built at
 * start, so a call runs grpc-js and the protobuf code of the real
 * messages and none of the service's own work: no validation, hashing,
 * cache, log line or database. It returns VALID for the secrets of users
 * 1 to BARE_SERVER_USERS and NOT_FOUND for any other, and sends its bound
 * port to the parent over IPC.
 */
import { type handleUnaryCall, Server } from "@grpc/grpc-js";
import { serveToParent } from "./child-server";
import {
  TokenKind,
  TokenServiceService,
  type ValidateTokenRequest,
  type ValidateTokenResponse,
  ValidationResult,
} from "../src/generated/token/v1/token_service";
import { BARE_SERVER_USERS, BENCH_ORG_ID, benchSecret } from "./table";

const expiresAt = new Date(Date.now() + 90 * 24 * 3600 * 1000);
const responses = new Map<string, ValidateTokenResponse>();
for (let user = 1; user <= BARE_SERVER_USERS; user++) {
  responses.set(benchSecret(user), {
    result: ValidationResult.VALIDATION_RESULT_VALID,
    tokenId: `00000000-0000-4000-8000-${String(user).padStart(12, "0")}`,
    userId: String(user),
    orgId: BENCH_ORG_ID,
    kind: TokenKind.TOKEN_KIND_DEFAULT,
    label: "Default",
    expiresAt,
    previousSecret: false,
    graceEndsAt: undefined,
  });
}

const NOT_FOUND: ValidateTokenResponse = {
  result: ValidationResult.VALIDATION_RESULT_NOT_FOUND,
  tokenId: "",
  userId: "",
  orgId: "",
  kind: TokenKind.TOKEN_KIND_UNSPECIFIED,
  label: "",
  expiresAt: undefined,
  previousSecret: false,
  graceEndsAt: undefined,
};

const validateToken: handleUnaryCall<
  ValidateTokenRequest,
  ValidateTokenResponse
> = (call, callback) => {
  callback(null, responses.get(call.request.secret) ?? NOT_FOUND);
};

const server = new Server();
server.addService(
  { validateToken: TokenServiceService.validateToken },
  { validateToken },
);

serveToParent(server);
