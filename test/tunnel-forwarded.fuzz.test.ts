// Fuzzes the other field of a tunnel's CONNECT the node reads as text: its `forwarded` header, the
// source pod's address as the client agent claims it (parseForwarded), checked against an oracle
// built on Node's own IPv4 parser: exactly for=<IPv4> or for="<IPv4>", else no claim. What it
// claims labels the connection's metrics and is the source address the pod's policy sees.
// MESH_FUZZ_SEED=<n> replays a run.
import test from 'ava';
import { isIPv4 } from 'node:net';
import { formatForwarded, parseForwarded } from '../src/tunnel/path.ts';
import { cpuMsSince, fuzzer, latin1 } from './helpers/fuzz.ts';

const INPUTS = 50_000;
/** CPU time of the whole run (~1 s measured). */
const MAX_RUN_CPU_MS = 10_000;

const f = fuzzer('tunnel-forwarded');
const { below, chance, pick } = f;

/** The oracle: "for=", then an IPv4 address as Node reads one, bare or in one pair of double quotes. */
function expected(v: string): string | null {
  if (v.slice(0, 4) !== 'for=') return null;
  const rest = v.slice(4);
  const quoted = /^"(.*)"$/s.exec(rest);
  const ip = quoted ? quoted[1]! : rest;
  return isIPv4(ip) ? ip : null;
}

const octet = () => String(pick([0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255, 256, 999, below(256)]));
const ipv4 = () => `${octet()}.${octet()}.${octet()}.${octet()}`;
const address = () => (chance(0.6) ? ipv4() : pick([`${octet()}.${octet()}.${octet()}`, `0${ipv4()}`, `${ipv4()}.`, 'fd00::1', '[fd00::1]:80', 'unknown', '_hidden', '']));
const CORPUS = [
  'for=10.1.0.5', 'for="10.1.0.5"', 'for=192.168.1.2', 'for=10.1.0.5;proto=https', 'for=10.1.0.5, for=10.1.0.6', 'for="10.1.0.5:4711"',
  'for="[fd00::1]:4711"', 'for=unknown', 'by=10.0.0.1;for=10.1.0.5', 'For=10.1.0.5', 'for=10.1.0.5x',
].map(latin1);

test('fuzz: parseForwarded takes exactly for=<IPv4>, bare or quoted, and the client writes that form', (t) => {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  const failures: string[] = [];
  let accepted = 0;
  const cpuStart = process.cpuUsage();
  for (let n = 0; n < INPUTS && failures.length < 10; n++) {
    let v: string;
    if (chance(0.4)) {
      const a = address();
      // Half as the client writes it, half with the other spellings and neighbours a header may have.
      if (chance(0.5)) v = formatForwarded(a);
      else v = `${pick(['for=', 'for=', 'For=', 'for = ', 'by=', ''])}${pick(['', '', '"'])}${a}${pick(['', '', '"'])}${pick(['', '', ';proto=http', ', for=10.1.0.6', ':80', 'x', ' '])}`;
    } else v = Buffer.from(f.mutateN(pick(CORPUS), CORPUS, 1 + below(3))).toString('latin1');
    let got: string | null;
    try {
      got = parseForwarded(v);
    } catch (e) {
      failures.push(`threw ${(e as Error).message}: ${JSON.stringify(v.slice(0, 200))}`);
      continue;
    }
    const want = expected(v);
    if (got !== want) failures.push(`${JSON.stringify(v.slice(0, 200))}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    if (got !== null) accepted++;
  }
  // Duplicate headers arrive joined (one string) or, from another HTTP/2 stack, as a list: never a claim.
  for (const v of [['for=10.1.0.5'], ['for=10.1.0.5', 'for=10.1.0.6'], undefined]) {
    if (parseForwarded(v) !== null) failures.push(`${JSON.stringify(v)}: got ${parseForwarded(v)}, want null`);
  }
  const runCpuMs = cpuMsSince(cpuStart);
  t.log(`${INPUTS} inputs (${accepted} accepted), ${runCpuMs.toFixed(0)} ms of CPU`);
  t.deepEqual(failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.true(runCpuMs < MAX_RUN_CPU_MS, `run took ${runCpuMs} ms of CPU`);
  t.true(accepted > INPUTS / 20 && accepted < INPUTS - INPUTS / 20, 'both verdicts');
});
