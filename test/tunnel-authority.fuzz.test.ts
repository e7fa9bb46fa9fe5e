// Fuzzes the one field of a tunnel's CONNECT the node reads as text: its :authority, which must
// be an IPv4 address and a port (parseAuthority), checked against Node's own IPv4 parser.
// MESH_FUZZ_SEED=<n> replays a run.
import test from 'ava';
import { isIPv4 } from 'node:net';
import { parseAuthority } from '../src/tunnel/path.ts';
import { cpuMsSince, fuzzer, latin1 } from './helpers/fuzz.ts';

const INPUTS = 50_000;
/** CPU time of the whole run (~1 s measured). */
const MAX_RUN_CPU_MS = 10_000;

const f = fuzzer('tunnel-authority');
const { below, chance, pick } = f;

/** The oracle: an IPv4 address as Node reads one, ':', and a port 1-65535 as String() writes it (no leading zero). */
function expected(a: string): { ip: string; port: number } | null {
  const i = a.lastIndexOf(':');
  if (i < 0) return null;
  const ip = a.slice(0, i);
  const p = a.slice(i + 1);
  if (!isIPv4(ip) || !/^\d{1,5}$/.test(p)) return null;
  const port = Number(p);
  return port >= 1 && port <= 65535 && String(port) === p ? { ip, port } : null;
}

const octet = () => String(pick([0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255, 256, 999, below(256)]));
const CORPUS = ['10.1.0.5:8080', '192.168.1.2:1', '0.0.0.0:65535', '255.255.255.255:443', '127.0.0.1:15008', '[fd00::1]:443', 'web.shop.svc:80'].map(latin1);

test('fuzz: parseAuthority takes exactly an IPv4 address and a port 1-65535', (t) => {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  const failures: string[] = [];
  let accepted = 0;
  const cpuStart = process.cpuUsage();
  for (let n = 0; n < INPUTS && failures.length < 10; n++) {
    let a: string;
    if (chance(0.4)) a = `${octet()}.${octet()}.${octet()}.${octet()}:${pick(['0', '1', '80', '080', '0080', '00001', '065535', '65535', '65536', '99999', '100000', '', String(below(70000))])}`;
    else a = Buffer.from(f.mutateN(pick(CORPUS), CORPUS, 1 + below(3))).toString('latin1');
    let got: ReturnType<typeof parseAuthority>;
    try {
      got = parseAuthority(a);
    } catch (e) {
      failures.push(`threw ${(e as Error).message}: ${JSON.stringify(a.slice(0, 200))}`);
      continue;
    }
    const want = expected(a);
    if (JSON.stringify(got) !== JSON.stringify(want)) failures.push(`${JSON.stringify(a.slice(0, 200))}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    if (got !== null) accepted++;
  }
  const runCpuMs = cpuMsSince(cpuStart);
  t.log(`${INPUTS} inputs (${accepted} accepted), ${runCpuMs.toFixed(0)} ms of CPU`);
  t.deepEqual(failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.true(runCpuMs < MAX_RUN_CPU_MS, `run took ${runCpuMs} ms of CPU`);
  t.true(accepted > INPUTS / 20 && accepted < INPUTS - INPUTS / 20, 'both verdicts');
});
