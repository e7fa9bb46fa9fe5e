// voting service (gRPC): counts votes in memory. A vote for the doughnut fails, as in
// emojivoto, so the web answers 500 for it and the mesh has a known failure rate to show.
//   node src/demo/voting-svc.ts --port 8080
import * as grpc from '@grpc/grpc-js';
import { BROKEN_VOTE } from './emoji-list.ts';
import { loadServices, serveGrpc, type VotingResult } from './proto.ts';
import { emit, flags, port } from './service-main.ts';

const o = flags({ port: { type: 'string', default: '8080' } }, 'voting-svc.ts --port P');
const votes = new Map<string, number>();
const { VotingService } = loadServices();
const server = new grpc.Server();
server.addService(VotingService.service, {
  Vote(call: grpc.ServerUnaryCall<{ shortcode: string }, unknown>, cb: grpc.sendUnaryData<object>) {
    const code = call.request.shortcode;
    if (code === BROKEN_VOTE) {
      cb({ code: grpc.status.UNKNOWN, details: `voting for ${BROKEN_VOTE} is broken (on purpose: the demo's failure)` });
      return;
    }
    votes.set(code, (votes.get(code) ?? 0) + 1);
    cb(null, {});
  },
  Results(_call: grpc.ServerUnaryCall<object, unknown>, cb: grpc.sendUnaryData<{ results: VotingResult[] }>) {
    const results = [...votes].map(([shortcode, n]) => ({ shortcode, votes: n })).sort((a, b) => b.votes - a.votes);
    cb(null, { results });
  },
});
emit({ listening: await serveGrpc(server, port(o.port, 'port')) });
