// Fuzzes the two fields of a tunnel's CONNECT the node reads as text, each against an oracle built
// on Node's own IPv4 parser: its :authority, an IPv4 address and a port (parseAuthority), and its
// forwarded header, the source pod's address as the client agent claims it (parseForwarded:
// exactly for=<IPv4> or for="<IPv4>", else no claim; a claim labels the connection's metrics and
// is the source address the pod's policy sees). MESH_FUZZ_SEED=<n> replays a run.
import test, { type ExecutionContext } from 'ava';
import { isIPv4 } from 'node:net';
import { formatForwarded, parseAuthority, parseForwarded } from '../src/tunnel/path.ts';
import { cpuMsSince, fuzzer, latin1 } from './helpers/fuzz.ts';

const INPUTS = 50_000;
/** CPU time of each test (~1 s measured). */
const MAX_RUN_CPU_MS = 10_000;

const f = fuzzer('tunnel-connect');
const { below, chance, pick } = f;

/** Feeds `parse` INPUTS texts from `make`: it must not throw, must agree with `expected`, and both verdicts must come up. */
function fuzzText<T>(t: ExecutionContext, make: () => string, parse: (s: string) => T | null, expected: (s: string) => T | null): void {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  const failures: string[] = [];
  let accepted = 0;
  const cpuStart = process.cpuUsage();
  for (let n = 0; n < INPUTS && failures.length < 10; n++) {
    const s = make();
    let got: T | null;
    try {
      got = parse(s);
    } catch (e) {
      failures.push(`threw ${(e as Error).message}: ${JSON.stringify(s.slice(0, 200))}`);
      continue;
    }
    const want = expected(s);
    if (JSON.stringify(got) !== JSON.stringify(want)) failures.push(`${JSON.stringify(s.slice(0, 200))}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
    if (got !== null) accepted++;
  }
  const runCpuMs = cpuMsSince(cpuStart);
  t.log(`${INPUTS} inputs (${accepted} accepted), ${runCpuMs.toFixed(0)} ms of CPU`);
  t.deepEqual(failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.true(runCpuMs < MAX_RUN_CPU_MS, `run took ${runCpuMs} ms of CPU`);
  t.true(accepted > INPUTS / 20 && accepted < INPUTS - INPUTS / 20, `both verdicts (${accepted} accepted)`);
}

const octet = () => String(pick([0, 1, 9, 10, 99, 100, 199, 200, 249, 250, 255, 256, 999, below(256)]));
const ipv4 = () => `${octet()}.${octet()}.${octet()}.${octet()}`;
const mutated = (corpus: Uint8Array[]) => Buffer.from(f.mutateN(pick(corpus), corpus, 1 + below(3))).toString('latin1');

/** The :authority oracle: an IPv4 address as Node reads one, ':', and a port 1-65535 as String() writes it (no leading zero). */
function expectedAuthority(a: string): { ip: string; port: number } | null {
  const i = a.lastIndexOf(':');
  if (i < 0) return null;
  const ip = a.slice(0, i);
  const p = a.slice(i + 1);
  if (!isIPv4(ip) || !/^\d{1,5}$/.test(p)) return null;
  const port = Number(p);
  return port >= 1 && port <= 65535 && String(port) === p ? { ip, port } : null;
}

const AUTHORITIES = ['10.1.0.5:8080', '192.168.1.2:1', '0.0.0.0:65535', '255.255.255.255:443', '127.0.0.1:15008', '[fd00::1]:443', 'web.shop.svc:80'].map(latin1);

test('fuzz: parseAuthority takes exactly an IPv4 address and a port 1-65535', (t) => {
  const port = () => pick(['0', '1', '80', '080', '0080', '00001', '065535', '65535', '65536', '99999', '100000', '', String(below(70000))]);
  fuzzText(t, () => (chance(0.4) ? `${ipv4()}:${port()}` : mutated(AUTHORITIES)), parseAuthority, expectedAuthority);
});

/** The forwarded oracle: "for=", then an IPv4 address as Node reads one, bare or in one pair of double quotes. */
function expectedForwarded(v: string): string | null {
  if (v.slice(0, 4) !== 'for=') return null;
  const rest = v.slice(4);
  const quoted = /^"(.*)"$/s.exec(rest);
  const ip = quoted ? quoted[1]! : rest;
  return isIPv4(ip) ? ip : null;
}

const FORWARDED = [
  'for=10.1.0.5', 'for="10.1.0.5"', 'for=192.168.1.2', 'for=10.1.0.5;proto=https', 'for=10.1.0.5, for=10.1.0.6', 'for="10.1.0.5:4711"',
  'for="[fd00::1]:4711"', 'for=unknown', 'by=10.0.0.1;for=10.1.0.5', 'For=10.1.0.5', 'for=10.1.0.5x',
].map(latin1);

test('fuzz: parseForwarded takes exactly for=<IPv4>, bare or quoted, and the client writes that form', (t) => {
  const address = () => (chance(0.6) ? ipv4() : pick([`${octet()}.${octet()}.${octet()}`, `0${ipv4()}`, `${ipv4()}.`, 'fd00::1', '[fd00::1]:80', 'unknown', '_hidden', '']));
  const make = () => {
    if (!chance(0.4)) return mutated(FORWARDED);
    const a = address();
    // Half as the client writes it, half with the other spellings and neighbours a header may have.
    if (chance(0.5)) return formatForwarded(a);
    return `${pick(['for=', 'for=', 'For=', 'for = ', 'by=', ''])}${pick(['', '', '"'])}${a}${pick(['', '', '"'])}${pick(['', '', ';proto=http', ', for=10.1.0.6', ':80', 'x', ' '])}`;
  };
  fuzzText(t, make, parseForwarded, expectedForwarded);
  // Duplicate headers arrive joined (one string, fuzzed above) or, from another HTTP/2 stack, as a list: never a claim.
  for (const v of [['for=10.1.0.5'], ['for=10.1.0.5', 'for=10.1.0.6'], undefined]) t.is(parseForwarded(v), null, JSON.stringify(v));
});
