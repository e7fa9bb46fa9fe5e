// Loads the demo's gRPC services from emojivoto.proto.
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';

const PROTO = fileURLToPath(new URL('./emojivoto.proto', import.meta.url));

export interface Emoji { unicode: string; shortcode: string }
export interface VotingResult { shortcode: string; votes: number }

export function loadServices(): { EmojiService: grpc.ServiceClientConstructor; VotingService: grpc.ServiceClientConstructor } {
  const def = protoLoader.loadSync(PROTO, { defaults: true });
  const pkg = grpc.loadPackageDefinition(def).emojivoto as grpc.GrpcObject;
  return {
    EmojiService: pkg.EmojiService as grpc.ServiceClientConstructor,
    VotingService: pkg.VotingService as grpc.ServiceClientConstructor,
  };
}

/** Binds an insecure gRPC server on 0.0.0.0:port (inside the pod's namespace). */
export function serveGrpc(server: grpc.Server, port: number): Promise<number> {
  return new Promise((resolve, reject) =>
    server.bindAsync(`0.0.0.0:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(new Error(`gRPC server on port ${port}: ${err.message}; is the port free in this pod?`)) : resolve(p)));
}
