import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { expect } from "chai";
import descriptor from "protobufjs/ext/descriptor";
import { startTestService, type TestService } from "./support/service";

const REFLECTION_PROTO = path.join(
  path.dirname(require.resolve("@grpc/reflection/package.json")),
  "build/proto/grpc/reflection/v1/reflection.proto",
);

type ReflectionResponse = {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorCode: number; errorMessage: string };
};

/** Sends one reflection request, as grpcurl does, and returns the response. */
function reflect(port: number, request: object): Promise<ReflectionResponse> {
  const definition = protoLoader.loadSync(REFLECTION_PROTO);
  const proto = grpc.loadPackageDefinition(definition) as any;
  const client = new proto.grpc.reflection.v1.ServerReflection(
    `127.0.0.1:${port}`,
    grpc.credentials.createInsecure(),
  );

  return new Promise((resolve, reject) => {
    const stream = client.ServerReflectionInfo();
    stream.on("data", (response: ReflectionResponse) => {
      resolve(response);
      stream.end();
      client.close();
    });
    stream.on("error", reject);
    stream.write(request);
  });
}

function decodeFiles(response: ReflectionResponse) {
  const files = response.fileDescriptorResponse?.fileDescriptorProto ?? [];
  return files.map(
    (bytes) => descriptor.FileDescriptorProto.decode(bytes) as any,
  );
}

describe("server reflection", () => {
  let service: TestService;

  before(async () => {
    service = await startTestService();
  });

  after(async () => {
    await service.stop();
  });

  it("lists the token, health and reflection services", async () => {
    const response = await reflect(service.app.port, { listServices: "" });

    const names = response.listServicesResponse!.service.map((s) => s.name);
    expect(names).to.include("token.v1.TokenService");
    expect(names).to.include("grpc.health.v1.Health");
  });

  it("describes token.v1.Token with its Timestamp fields", async () => {
    const response = await reflect(service.app.port, {
      fileContainingSymbol: "token.v1.Token",
    });

    const files = decodeFiles(response);
    const tokenFile = files.find((f) => f.package === "token.v1");
    expect(tokenFile, "token.v1 file").to.not.equal(undefined);
    const token = tokenFile.messageType.find((m: any) => m.name === "Token");
    const createdAt = token.field.find((f: any) => f.name === "created_at");
    expect(createdAt.typeName).to.equal(".google.protobuf.Timestamp");
    expect(tokenFile.dependency).to.include("google/protobuf/timestamp.proto");
  });

  it("describes the lookup calls and grace_period", async () => {
    const response = await reflect(service.app.port, {
      fileContainingSymbol: "token.v1.TokenService",
    });

    const tokenFile = decodeFiles(response).find(
      (f) => f.package === "token.v1",
    );
    const methods = tokenFile.service[0].method.map((m: any) => m.name);
    expect(methods).to.include.members([
      "GetDefault",
      "ValidateToken",
      "ListAuditEvents",
    ]);
    const regenerate = tokenFile.messageType.find(
      (m: any) => m.name === "RegenerateRequest",
    );
    const grace = regenerate.field.find((f: any) => f.name === "grace_period");
    expect(grace.typeName).to.equal(".google.protobuf.Duration");
    expect(tokenFile.dependency).to.include("google/protobuf/duration.proto");
  });

  for (const filename of [
    "google/protobuf/timestamp.proto",
    "grpc/health/v1/health.proto",
    "google/rpc/error_details.proto",
  ]) {
    it(`serves ${filename} by name`, async () => {
      const response = await reflect(service.app.port, {
        fileByFilename: filename,
      });

      const files = decodeFiles(response);
      expect(response.errorResponse, "error response").to.equal(undefined);
      expect(files.map((f) => f.name)).to.include(filename);
    });
  }
});
