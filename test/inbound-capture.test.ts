// The inbound capture's nftables table (pure): what it captures, drops and lets pass, and the held
// form a stopping agent leaves. The kernel's side: test/inbound.e2e.test.ts, inbound-failclosed.e2e.test.ts.
import test from 'ava';
import { inboundListenError } from '../src/agent/agent.ts';
import { renderCapture } from '../src/datapath/inbound-capture.ts';

const pods = [
  { ip: '10.244.1.10', failClosed: false, skipInbound: [] as Array<[number, number]> },
  { ip: '10.244.1.2', failClosed: true, skipInbound: [[9090, 9090], [5000, 5010]] as Array<[number, number]> },
];

/** A chain's rules (prerouting unless named), one a line. */
function rulesOf(text: string, chain = 'prerouting'): string[] {
  const body = text.slice(text.indexOf(`chain ${chain} {`));
  return body.slice(0, body.indexOf('\n\t}')).split('\n').filter((l) => l.startsWith('\t\t') && !l.includes('type ')).map((l) => l.trim());
}

const MARK = 'meta mark set meta mark & 0xffffcfff | 0x2000';
const CT_MARK = 'ct mark set ct mark & 0xffffcfff | 0x2000';

test('capturing: SYNs to meshed pods go to the listener; the rest of a captured connection and the pod\'s answers to the agent follow; skip-inbound ports pass first', (t) => {
  const text = renderCapture({ listener: { ip: '10.244.0.1', port: 15006 }, pods });
  t.true(text.startsWith('table ip mesh-agent\ndelete table ip mesh-agent\ntable ip mesh-agent {'), 'replaced whole, in one transaction');
  t.regex(text, /set captured \{\n\t\ttype ipv4_addr\n\t\telements = \{ 10\.244\.1\.2,\n\t\t\t     10\.244\.1\.10 \}/, 'sorted by address');
  t.regex(text, /set fail-closed \{\n\t\ttype ipv4_addr\n\t\telements = \{ 10\.244\.1\.2 \}/);
  t.regex(text, /elements = \{ 10\.244\.1\.2 \. 9090,\n\t\t\t     10\.244\.1\.2 \. 5000-5010 \}/);
  t.regex(text, /type filter hook prerouting priority -90; policy accept;/, 'after kube-proxy\'s DNAT');
  const rules = rulesOf(text);
  t.deepEqual(rules, [
    'meta l4proto != tcp accept',
    'ip daddr . tcp dport @skip-inbound accept',
    'tcp flags & (fin | syn | rst | ack) == syn ip daddr @captured tproxy to 10.244.0.1:15006 meta mark set meta mark & 0xffffcfff | 0x2000 accept',
    'tcp flags & (fin | syn | rst | ack) == syn ip daddr @fail-closed counter drop',
    'ip daddr @captured socket transparent 1 meta mark set meta mark & 0xffffcfff | 0x2000 accept',
    'ip saddr @captured socket transparent 1 meta mark set meta mark & 0xffffcfff | 0x2000 accept',
  ]);
});

test('the node\'s own output: a new connection kube-proxy rewrote to a meshed pod is marked (it and its connection) so the policy route sends it through prerouting; connections under way before stay direct', (t) => {
  const text = renderCapture({ listener: { ip: '10.244.0.1', port: 15006 }, pods });
  t.regex(text, /chain output \{\n\t\ttype route hook output priority -90; policy accept;/, 'after kube-proxy\'s output DNAT (-100); a route chain, so a changed mark is routed again');
  t.deepEqual(rulesOf(text, 'output'), [
    'meta l4proto != tcp accept',
    `ct mark & 0x3000 == 0x2000 ${MARK} accept`,
    'ip daddr . tcp dport @skip-inbound accept',
    `tcp flags & (fin | syn | rst | ack) == syn ct state new ct status dnat ip daddr @captured ${CT_MARK} ${MARK} accept`,
    `tcp flags & (fin | syn | rst | ack) == syn ct state new ct status dnat ip daddr @fail-closed ${CT_MARK} ${MARK} accept`,
  ]);
  t.deepEqual(rulesOf(renderCapture({ listener: null, pods }), 'output'), [
    'meta l4proto != tcp accept',
    `ct mark & 0x3000 == 0x2000 ${MARK} accept`,
    'ip daddr . tcp dport @skip-inbound accept',
    `tcp flags & (fin | syn | rst | ack) == syn ct state new ct status dnat ip daddr @fail-closed ${CT_MARK} ${MARK} accept`,
  ], 'no listener: only fail-closed pods\' connections go round, to be dropped in prerouting; the rest reach their pod');
});

test('held (no agent takes connections): no TPROXY; fail-closed pods\' SYNs are dropped, others pass; captured connections still reach the agent\'s sockets', (t) => {
  const text = renderCapture({ listener: null, pods });
  t.notRegex(text, /tproxy/);
  t.regex(text, /@fail-closed counter drop/);
  t.regex(text, /ip daddr @captured socket transparent 1/);
  const none = renderCapture({ listener: null, pods: [] });
  t.notRegex(none, /elements/, 'empty sets have no elements line');
});

test('with identity on: a SYN to the tunnel port meets the agent\'s listener when one listens, else is dropped (another node\'s agent retries into the next agent); held, it is dropped', (t) => {
  const held = renderCapture({ listener: null, pods, tunnel: { ip: '10.244.0.1', port: 15008, open: false } });
  t.notRegex(held, /15008 socket transparent 0 accept/, 'a stopping agent takes no new tunnel connection: its accept queue empties before it closes');
  t.regex(held, /15008 counter drop/);
  const text = renderCapture({ listener: { ip: '10.244.0.1', port: 15001 }, pods, tunnel: { ip: '10.244.0.1', port: 15008, open: true } });
  const rules = rulesOf(text);
  t.deepEqual(rules.slice(0, 4), [
    'meta l4proto != tcp accept',
    'ip daddr . tcp dport @skip-inbound accept',
    'tcp flags & (fin | syn | rst | ack) == syn ip daddr 10.244.0.1 tcp dport 15008 socket transparent 0 accept',
    'tcp flags & (fin | syn | rst | ack) == syn ip daddr 10.244.0.1 tcp dport 15008 counter drop',
  ]);
  t.notRegex(renderCapture({ listener: null, pods }), /15008/, 'identity off: no such rule');
});

test('starting (the tunnel open before the agent captures): tunnel SYNs meet its listener; no TPROXY, fail-closed pods\' SYNs are still dropped', (t) => {
  const text = renderCapture({ listener: null, pods, tunnel: { ip: '10.244.0.1', port: 15008, open: true } });
  const rules = rulesOf(text);
  t.deepEqual(rules, [
    'meta l4proto != tcp accept',
    'ip daddr . tcp dport @skip-inbound accept',
    'tcp flags & (fin | syn | rst | ack) == syn ip daddr 10.244.0.1 tcp dport 15008 socket transparent 0 accept',
    'tcp flags & (fin | syn | rst | ack) == syn ip daddr 10.244.0.1 tcp dport 15008 counter drop',
    'tcp flags & (fin | syn | rst | ack) == syn ip daddr @fail-closed counter drop',
    'ip daddr @captured socket transparent 1 meta mark set meta mark & 0xffffcfff | 0x2000 accept',
    'ip saddr @captured socket transparent 1 meta mark set meta mark & 0xffffcfff | 0x2000 accept',
  ]);
});

test('an inbound listener that cannot listen: the error names the cause and the fix', (t) => {
  const at = { ip: '10.244.0.2', port: 15006 };
  t.regex(inboundListenError(at, new Error('listen 10.244.0.2:15006: EADDRINUSE (address already in use)')),
    /^inbound listener on 10\.244\.0\.2:15006 failed: .*EADDRINUSE.*; another agent \(or process\) holds port 15006 on this node: stop it, or pass another port with --inbound-addr \(install: --inbound-port\); until it listens nothing is captured/);
  t.regex(inboundListenError(at, new Error('bind: EADDRNOTAVAIL')), /10\.244\.0\.2 is not an address of this host: pass --inbound-addr with the node IP/);
  t.regex(inboundListenError(at, new Error('setsockopt IP_TRANSPARENT: EPERM')), /needs CAP_NET_ADMIN/);
  t.regex(inboundListenError(at, new Error('something else')), /failed: something else; until it listens/);
  // As the addon throws it: strerror's text and the errno.
  t.regex(inboundListenError(at, Object.assign(new Error('binding the inbound listener failed: Address already in use'), { errno: 98 })), /holds port 15006 on this node/);
});
