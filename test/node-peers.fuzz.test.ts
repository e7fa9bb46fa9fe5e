// Fuzzes the JSON a node's parts read from each other: the CNI plugin's admission request (read
// by the agent) and the agent's answer (read by the plugin), and an agent's certificate request
// (read by the identity service) and the service's answer (read by the agent). MESH_FUZZ_SEED=<n>
// replays a run.
import test from 'ava';
import { parseAdmitAnswer, parseAdmitRequest } from '../src/cni/protocol.ts';
import { MAX_REQUEST_BYTES, parseCertifyRequest, parseCertifyResponse, type CertifyRequest } from '../src/identity/api.ts';
import { fuzzer, fuzzJsonParsers, type JsonParser } from './helpers/fuzz.ts';

const INPUTS = 20_000;
/** CPU time of the whole run (~2 s measured): CPU time, which a busy machine does not stretch. */
const MAX_RUN_CPU_MS = 20_000;
/** The largest body the agent's CNI socket reads (src/agent/cni-server.ts), and the identity service's. */
const MAX_ADMIT_BYTES = 16 * 1024;

const f = fuzzer('node-peers');

/** An Error of the parser's own (not a TypeError or RangeError from inside it); SyntaxError where the reader's JSON.parse throws. */
const ownError = (e: unknown, parsesJson: boolean) => (e instanceof Error && e.constructor === Error) || (parsesJson && e instanceof SyntaxError);

const PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const CSR = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n';

const PARSERS: JsonParser[] = [
  {
    name: 'parseAdmitRequest (agent, from the CNI plugin)',
    corpus: [
      { namespace: 'shop', name: 'api-1', uid: '6f1c0c4e-1f0e-4d0a-9c3b-0a1b2c3d4e5f', ips: ['10.0.0.1', 'fd00::1'], containerId: 'c0ffee' },
      { namespace: 'shop', name: 'web-1.x', ips: [], containerId: '' },
    ],
    parse: parseAdmitRequest,
    documented: (e) => ownError(e, false),
  },
  {
    name: 'parseAdmitAnswer (CNI plugin, from the agent)',
    corpus: [
      { result: 'meshed', policy: 'all-authenticated', failsClosed: true },
      { result: 'not-meshed', reason: 'namespace shop is not meshed' },
      { result: 'retry', meshed: null, message: 'the agent is starting' },
      { result: 'retry', meshed: true, message: 'waiting for the pod\'s policy' },
    ],
    parse: parseAdmitAnswer,
    documented: (e) => ownError(e, false),
  },
  {
    name: 'parseCertifyRequest (identity service, from an agent)',
    corpus: [{ identity: 'spiffe://cluster.local/ns/shop/sa/web', csr: CSR }, { identity: 'spiffe://td.example/ns/a-b/sa/c.d', csr: CSR }],
    parse: (l) => parseCertifyRequest(JSON.parse(l)),
    documented: (e) => ownError(e, true),
    text: (r: CertifyRequest) => JSON.stringify({ identity: r.uri, csr: r.csr }),
  },
  {
    name: 'parseCertifyResponse (agent, from the identity service)',
    corpus: [{ certificate: PEM, chain: [PEM, PEM], notBefore: '2026-01-01T00:00:00.000Z', notAfter: '2026-01-02T00:00:00.000Z', serial: '0a1b' }],
    parse: (l) => parseCertifyResponse(JSON.parse(l)),
    documented: (e) => ownError(e, true),
  },
];

test('fuzz: CNI admission and identity certify messages: only the documented error, a result that parses again to itself, bounded time', (t) => {
  t.log(`MESH_FUZZ_SEED=${f.seed}`);
  const r = fuzzJsonParsers(f, PARSERS, INPUTS, Math.max(MAX_ADMIT_BYTES, MAX_REQUEST_BYTES));
  t.log(r.summary);
  t.deepEqual(r.failures, [], `replay with MESH_FUZZ_SEED=${f.seed}`);
  t.true(r.cpuMs < MAX_RUN_CPU_MS, `run took ${r.cpuMs} ms of CPU`);
  for (const [k, v] of r.accepted) t.true(v > 50 && v < INPUTS / PARSERS.length - 50, `${k}: ${v} accepted`);
});
