// emoji service (gRPC): lists the emoji and finds one by shortcode.
//   node src/demo/emoji-svc.ts --port 8080
import * as grpc from '@grpc/grpc-js';
import { EMOJI } from './emoji-list.ts';
import { loadServices, serveGrpc, type Emoji } from './proto.ts';
import { emit, flags, port } from './service-main.ts';

const o = flags({ port: { type: 'string', default: '8080' } }, 'emoji-svc.ts --port P');
const { EmojiService } = loadServices();
const server = new grpc.Server();
server.addService(EmojiService.service, {
  ListAll(_call: grpc.ServerUnaryCall<object, unknown>, cb: grpc.sendUnaryData<{ list: readonly Emoji[] }>) {
    cb(null, { list: EMOJI });
  },
  FindByShortcode(call: grpc.ServerUnaryCall<{ shortcode: string }, unknown>, cb: grpc.sendUnaryData<{ emoji: Emoji | null }>) {
    cb(null, { emoji: EMOJI.find((e) => e.shortcode === call.request.shortcode) ?? null });
  },
});
emit({ listening: await serveGrpc(server, port(o.port, 'port')) });
