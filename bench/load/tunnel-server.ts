// The tunnel listener alone (src/tunnel/server.ts, as an agent runs it) for the handshake bench:
// it holds one workload's certificate and verifies clients against the anchor. Reads its
// credentials from the JSON file given; prints {"port":P}, then on each stdin line its CPU time
// and the handshakes it accepted: {"cpuUs":N,"accepted":A,"refused":R}.
//   node bench/load/tunnel-server.ts FILE
import * as fs from 'node:fs';
import * as readline from 'node:readline';
import { CredentialStore, type CredentialUpdate } from '../../src/identity/credentials.ts';
import { TunnelServer } from '../../src/tunnel/server.ts';
import { defaultLimits } from '../../src/proxy/context.ts';
import { nullSink } from '../../src/telemetry/events.ts';

const cfg = JSON.parse(fs.readFileSync(process.argv[2]!, 'utf8')) as { anchorsPem: string; server: CredentialUpdate };
const creds = new CredentialStore(cfg.anchorsPem);
creds.apply(cfg.server);
const server = new TunnelServer({
  listen: { host: '127.0.0.1', port: 0 },
  trustDomain: 'cluster.local',
  creds,
  pods: { byIp: () => null },
  telemetry: nullSink,
  limits: defaultLimits,
  log: () => {},
});
const { port } = await server.listen();
process.stdout.write(JSON.stringify({ port }) + '\n');
readline.createInterface({ input: process.stdin }).on('line', () => {
  const c = process.cpuUsage();
  const refused = Object.values(server.stats.refusedClients).reduce((a, b) => a + b, 0);
  process.stdout.write(JSON.stringify({ cpuUs: c.user + c.system, accepted: server.stats.accepted, refused }) + '\n');
}).on('close', () => process.exit(0));
