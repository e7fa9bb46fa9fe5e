// Simulated agents for the discovery-scale bench: `count` HTTP/2 connections to the controller,
// each holding one discovery stream as an agent does (same request, same flow-control windows).
// The snapshot is counted and scanned for its synced line, not parsed: a real agent's store per
// simulated agent would not fit hundreds in one process, and the bench measures the controller.
// Lines after synced are parsed; the bench's change marker is the EndpointSlice bench/target-a,
// whose endpoint 10.254.X.Y carries the change number X*256+Y.
// Prints JSON lines on stdout:
//   {"synced":N,"snapshotBytes":AVG,"at":MS}          once every agent has its world
//   {"change":K,"first":MS,"last":MS,"bytes":SUM,"agents":N}   once every agent has change K
// Times are wall-clock milliseconds with sub-millisecond precision (performance.timeOrigin + now).
//   node bench/load/disco-agents.ts --url http://127.0.0.1:PORT --count 250 [--id-base 0] [--parallel 50]
import * as http2 from 'node:http2';
import { parseArgs } from 'node:util';
import { HEADER_AGENT_ID, HEADER_NODE, PATH_DISCOVERY } from '../../src/controller/protocol.ts';
import { SESSION_WINDOW, STREAM_WINDOW } from '../../src/discovery/client.ts';

const { values } = parseArgs({ options: { url: { type: 'string' }, count: { type: 'string' }, 'id-base': { type: 'string', default: '0' }, parallel: { type: 'string', default: '50' } } });
if (!values.url || !values.count) {
  process.stderr.write('usage: disco-agents.ts --url http://HOST:PORT --count N [--id-base B] [--parallel P]\n');
  process.exit(2);
}
const url = values.url;
const count = Number(values.count);
const base = Number(values['id-base']);
const parallel = Number(values.parallel);
const now = () => performance.timeOrigin + performance.now();
const out = (o: object) => process.stdout.write(JSON.stringify(o) + '\n');

const SYNCED = Buffer.from('{"type":"synced"}\n');
const CHANGE = /"name":"target-a".*?"ip":"10\.254\.(\d+)\.(\d+)"/;

interface Agent {
  synced: boolean;
  /** The last bytes of the previous chunk, for a synced line cut between two chunks. */
  carry: Buffer;
  bytes: number;
  snapshotBytes: number;
  partial: string;
  bytesAtLastChange: number;
}

const agents: Agent[] = [];
let syncedCount = 0;
const changes = new Map<number, { first: number; last: number; bytes: number; agents: number }>();

function onSynced(a: Agent) {
  a.synced = true;
  a.snapshotBytes = a.bytes;
  a.bytesAtLastChange = a.bytes;
  if (++syncedCount === count) out({ synced: count, snapshotBytes: agents.reduce((n, x) => n + x.snapshotBytes, 0) / count, at: now() });
}

function onLine(a: Agent, line: string, at: number) {
  const m = CHANGE.exec(line);
  if (!m) return;
  const k = Number(m[1]) * 256 + Number(m[2]);
  const bytes = a.bytes - a.bytesAtLastChange;
  a.bytesAtLastChange = a.bytes;
  let c = changes.get(k);
  if (!c) changes.set(k, (c = { first: at, last: at, bytes: 0, agents: 0 }));
  c.first = Math.min(c.first, at);
  c.last = Math.max(c.last, at);
  c.bytes += bytes;
  if (++c.agents === count) {
    out({ change: k, ...c });
    changes.delete(k);
  }
}

function onData(a: Agent, buf: Buffer) {
  const at = now();
  a.bytes += buf.length;
  let rest: Buffer | null = null;
  if (!a.synced) {
    let i = buf.indexOf(SYNCED);
    if (i >= 0) rest = buf.subarray(i + SYNCED.length);
    else if (a.carry.length) {
      const edge = Buffer.concat([a.carry, buf.subarray(0, SYNCED.length - 1)]);
      i = edge.indexOf(SYNCED);
      if (i >= 0) rest = buf.subarray(i + SYNCED.length - a.carry.length);
    }
    if (rest === null) {
      a.carry = Buffer.from(buf.subarray(Math.max(0, buf.length - (SYNCED.length - 1))));
      return;
    }
    a.bytes -= rest.length; // what follows synced is the first delta's, not the snapshot's
    onSynced(a);
    a.bytes += rest.length;
    if (rest.length === 0) return;
    buf = rest;
  }
  a.partial += buf.toString('utf8');
  let nl: number;
  while ((nl = a.partial.indexOf('\n')) >= 0) {
    const line = a.partial.slice(0, nl);
    a.partial = a.partial.slice(nl + 1);
    onLine(a, line, at);
  }
}

function open(id: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const a: Agent = { synced: false, carry: Buffer.alloc(0), bytes: 0, snapshotBytes: 0, partial: '', bytesAtLastChange: 0 };
    agents.push(a);
    const s = http2.connect(url, { settings: { initialWindowSize: STREAM_WINDOW } });
    s.on('error', (e) => reject(new Error(`agent ${id}: ${e.message}`)));
    s.once('connect', () => s.setLocalWindowSize(SESSION_WINDOW));
    const req = s.request({ ':method': 'GET', ':path': PATH_DISCOVERY, [HEADER_NODE]: `node-${id}`, [HEADER_AGENT_ID]: `bench-${id}` });
    req.on('response', (h) => (h[':status'] === 200 ? resolve() : reject(new Error(`agent ${id}: HTTP ${h[':status']}`))));
    req.on('data', (d: Buffer) => onData(a, d));
    req.on('close', () => {
      if (!stopping) {
        process.stderr.write(`agent ${id}: the controller closed its stream (code ${req.rstCode})\n`);
        process.exit(1);
      }
    });
  });
}

let stopping = false;
process.stdin.on('end', () => {
  stopping = true;
  process.exit(0);
});
process.stdin.resume();

let next = 0;
async function worker() {
  while (next < count) await open(base + next++);
}
Promise.all(Array.from({ length: Math.min(parallel, count) }, worker)).catch((e) => {
  process.stderr.write(`${(e as Error).message}\n`);
  process.exit(1);
});
