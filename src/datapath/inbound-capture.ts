// Inbound capture on the destination's node (docs/policy.md, "Capture"): connections to this
// node's meshed pods that did not come through the agent are handed to the agent's inbound
// listener by the kernel's TPROXY, in the node's network namespace, after kube-proxy's DNAT (so
// a Service's connection is seen with its pod as destination). Nothing changes in the pod.
//
// One nftables table, replaced whole and atomically on every change (as kube-proxy's nftables
// mode does), and Cilium's policy route (a fwmark rule to a table whose default route is local),
// so a packet for a pod's address is delivered to the agent's socket instead of forwarded:
//
//   skip-inbound ports                       pass (the pod's own exemption)
//   a SYN to the tunnel port, no listener    dropped: another node's agent retries into the next agent
//     (or held: the stopping agent's; a starting agent opens it before it captures)
//   a SYN to a meshed pod                    TPROXY to the agent's listener, when one listens
//   a SYN to a fail-closed pod, not taken    dropped: the client retries until an agent is back
//   the rest of a captured connection        to the agent's socket (socket transparent)
//   a pod's answers to the agent's upstream  to the agent's socket (it connected with the client's address)
//
// and in the node's own output, after kube-proxy's DNAT:
//
//   a new connection rewritten to a meshed pod   marked (and its connection), so it is routed to lo
//     (a ClusterIP, a NodePort)                  and meets the rules above in prerouting
//
// The agent's own connections to its pods are never captured: they leave the node's own stack
// (output) to the pod's address, never rewritten, and never pass prerouting. Its dials with no
// route (to a ClusterIP, before discovery knows it) are rewritten by kube-proxy: captured, they
// are authorized by the pod's policy as an unauthenticated client of the node, as Linkerd's
// inbound proxy sees a client that sent no identity. The node's own processes' connections
// straight to a pod's address (kubelet's probes) are not captured: see docs/policy.md. When no agent listens (it died, or it is between two
// agents), TPROXY finds no socket and the packet goes on: fail-open pods are reached directly,
// fail-closed pods' SYNs are dropped. The table stays across agent restarts for that reason.
import * as fs from 'node:fs';
import { ipBinary, nftBinary, run } from './nft.ts';

export const CAPTURE_TABLE = 'mesh-agent';
/**
 * Marks a captured packet for the policy route, and (as a connection mark) a connection of the
 * node's own output that is captured. Bits 12-13: clear of kube-proxy's 0x4000/0x8000, Calico's
 * default 0xffff0000 and Cilium's 0x0f00.
 */
export const CAPTURE_MARK = 0x2000;
export const CAPTURE_MARK_MASK = 0x3000;
/** The routing table holding `local 0.0.0.0/0 dev lo`, and the rule's preference. */
export const CAPTURE_ROUTE_TABLE = 15006;
export const CAPTURE_RULE_PREF = 100;
/** Both chains: after kube-proxy's DNAT (dstnat and output nat, -100), before filter (0). */
export const CAPTURE_PRIORITY = -90;

export interface CapturePod {
  ip: string;
  /** Its policy restricts who may connect: while no agent takes its connections, they are dropped. */
  failClosed: boolean;
  /** Its skip-inbound ports: never captured, never dropped. */
  skipInbound: Array<[number, number]>;
}

export interface CaptureRuleset {
  /** The agent's inbound listener; null while no agent takes connections (stopping, starting). */
  listener: { ip: string; port: number } | null;
  pods: CapturePod[];
  /**
   * The agent's mTLS tunnel listener (identity on): while no socket listens there (between two
   * agents), the SYNs of other nodes' agents are dropped, so they retry into the next agent
   * rather than being refused (docs/policy.md). open: SYNs go to the listener when one listens
   * (capturing, or starting: the agent serves tunnels before it captures); not open: every SYN is
   * dropped (held by a stopping agent, whose accept queue must empty before its listener closes).
   */
  tunnel?: { ip: string; port: number; open: boolean } | null;
}

const hex = (n: number): string => `0x${n.toString(16)}`;

/**
 * IPv4 addresses in numeric order, octet by octet. Not localeCompare(…, { numeric: true }): the
 * agent's first collation maps 3 MB of ICU's data and code into its RSS (docs/benchmarks.md).
 */
function compareIpv4(a: string, b: string): number {
  const x = a.split('.');
  const y = b.split('.');
  for (let i = 0; i < 4; i++) {
    const d = Number(x[i]) - Number(y[i]);
    if (d !== 0) return d;
  }
  return 0;
}

function elements(items: string[]): string {
  return items.length ? `\t\telements = { ${items.join(',\n\t\t\t     ')} }\n` : '';
}

/** The whole table as `nft -f` text: created, deleted and created again in one transaction. */
export function renderCapture(r: CaptureRuleset): string {
  const pods = [...r.pods].sort((a, b) => compareIpv4(a.ip, b.ip));
  const skip: string[] = [];
  for (const p of pods) for (const [lo, hi] of p.skipInbound) skip.push(`${p.ip} . ${lo === hi ? lo : `${lo}-${hi}`}`);
  const mark = `meta mark set meta mark & ${hex(~CAPTURE_MARK_MASK >>> 0)} | ${hex(CAPTURE_MARK)}`;
  const syn = 'tcp flags & (fin | syn | rst | ack) == syn';
  const lines: string[] = [];
  lines.push(`table ip ${CAPTURE_TABLE}`, `delete table ip ${CAPTURE_TABLE}`, `table ip ${CAPTURE_TABLE} {`);
  lines.push(`\tcomment "mesh-agent inbound capture (docs/policy.md); mesh-agent cleanup removes it"`);
  lines.push(`\tset captured {\n\t\ttype ipv4_addr\n${elements(pods.map((p) => p.ip))}\t}`);
  lines.push(`\tset fail-closed {\n\t\ttype ipv4_addr\n${elements(pods.filter((p) => p.failClosed).map((p) => p.ip))}\t}`);
  lines.push(`\tset skip-inbound {\n\t\ttype ipv4_addr . inet_service\n\t\tflags interval\n${elements(skip)}\t}`);
  const rules = [
    'meta l4proto != tcp accept',
    'ip daddr . tcp dport @skip-inbound accept',
    // Held (stopping): every SYN to the tunnel port is dropped, so the grace before the tunnel
    // listener closes empties its accept queue and resets nothing.
    ...(r.tunnel ? [
      ...(r.tunnel.open ? [`${syn} ip daddr ${r.tunnel.ip} tcp dport ${r.tunnel.port} socket transparent 0 accept`] : []),
      `${syn} ip daddr ${r.tunnel.ip} tcp dport ${r.tunnel.port} counter drop`,
    ] : []),
    ...(r.listener ? [`${syn} ip daddr @captured tproxy to ${r.listener.ip}:${r.listener.port} ${mark} accept`] : []),
    `${syn} ip daddr @fail-closed counter drop`,
    `ip daddr @captured socket transparent 1 ${mark} accept`,
    `ip saddr @captured socket transparent 1 ${mark} accept`,
  ];
  lines.push(`\tchain prerouting {\n\t\ttype filter hook prerouting priority ${CAPTURE_PRIORITY}; policy accept;\n${rules.map((x) => `\t\t${x}\n`).join('')}\t}`);
  // The node's own output: a connection kube-proxy rewrote (ClusterIP, NodePort) to a meshed pod
  // of this node never passes prerouting. Marked, it is routed to lo by the policy route and
  // comes back in through prerouting, where the rules above take it as any client's. The
  // connection mark remembers it, so connections that were under way before stay direct.
  const ctMark = `ct mark set ct mark & ${hex(~CAPTURE_MARK_MASK >>> 0)} | ${hex(CAPTURE_MARK)}`;
  // A SYN: a connection whose conntrack entry was lost mid-stream is picked up again as new
  // (nf_conntrack_tcp_loose), and must not be turned to lo where no socket owns it.
  const rewritten = `${syn} ct state new ct status dnat`;
  const out = [
    'meta l4proto != tcp accept',
    `ct mark & ${hex(CAPTURE_MARK_MASK)} == ${hex(CAPTURE_MARK)} ${mark} accept`,
    'ip daddr . tcp dport @skip-inbound accept',
    // With no listener only fail-closed pods' connections go round (to be dropped, and retried
    // into the next agent); the rest reach their pod directly, as from any client.
    ...(r.listener ? [`${rewritten} ip daddr @captured ${ctMark} ${mark} accept`] : []),
    `${rewritten} ip daddr @fail-closed ${ctMark} ${mark} accept`,
  ];
  lines.push(`\tchain output {\n\t\ttype route hook output priority ${CAPTURE_PRIORITY}; policy accept;\n${out.map((x) => `\t\t${x}\n`).join('')}\t}`);
  lines.push('}');
  return lines.join('\n') + '\n';
}

function failed(what: string, r: { code: number; stderr: string }, fix: string): Error {
  return new Error(`${what} failed (exit ${r.code}): ${r.stderr.trim().split('\n').slice(0, 3).join(' | ') || 'no output'}; ${fix}`);
}

const CAP_HINT = 'the agent needs CAP_NET_ADMIN in the node\'s network namespace, and a kernel with nftables TPROXY and socket matching (nft_tproxy, nft_socket; Linux 5.x)';

/** The table, the rule and the route in the agent's network namespace (the node's). */
export class InboundCapture {
  #applied: string | null = null;
  #routed = false;

  /** Replaces the table (skipped when unchanged) and makes sure the policy route exists. */
  async apply(r: CaptureRuleset): Promise<void> {
    const text = renderCapture(r);
    if (text !== this.#applied) {
      const res = await run(nftBinary(), ['-f', '-'], text);
      if (res.code !== 0) throw failed('applying the inbound capture table', res, CAP_HINT);
      this.#applied = text;
    }
    if (!this.#routed) {
      await ensureRoute();
      this.#routed = true;
    }
  }

  /** Removes the table, the rule and the route: nothing of the capture is left in the kernel. */
  async remove(): Promise<void> {
    await removeCapture();
    this.#applied = null;
    this.#routed = false;
  }
}

async function ensureRoute(): Promise<void> {
  const ip = ipBinary();
  const sel = ['pref', String(CAPTURE_RULE_PREF), 'fwmark', `${hex(CAPTURE_MARK)}/${hex(CAPTURE_MARK_MASK)}`, 'lookup', String(CAPTURE_ROUTE_TABLE)];
  const shown = await run(ip, ['-4', 'rule', 'show', 'pref', String(CAPTURE_RULE_PREF)]);
  if (shown.code !== 0) throw failed('reading the policy rules', shown, CAP_HINT);
  if (!shown.stdout.includes(`lookup ${CAPTURE_ROUTE_TABLE}`)) {
    const added = await run(ip, ['-4', 'rule', 'add', ...sel]);
    if (added.code !== 0) throw failed(`adding the policy rule (ip rule add ${sel.join(' ')})`, added, CAP_HINT);
  }
  const route = await run(ip, ['-4', 'route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', String(CAPTURE_ROUTE_TABLE)]);
  if (route.code !== 0) throw failed(`adding the local route of table ${CAPTURE_ROUTE_TABLE}`, route, CAP_HINT);
}

/**
 * Everything the capture puts in the current network namespace, removed; what is already gone
 * is fine. `mesh-agent cleanup` and an uninstalling agent call this.
 */
export async function removeCapture(): Promise<string[]> {
  const removed: string[] = [];
  const nft = await run(nftBinary(), ['delete', 'table', 'ip', CAPTURE_TABLE]);
  if (nft.code === 0) removed.push(`nftables table ip ${CAPTURE_TABLE}`);
  else if (!/No such file or directory|does not exist/i.test(nft.stderr)) throw failed(`deleting the nftables table ip ${CAPTURE_TABLE}`, nft, CAP_HINT);
  const ip = ipBinary();
  for (;;) {
    const del = await run(ip, ['-4', 'rule', 'del', 'pref', String(CAPTURE_RULE_PREF), 'lookup', String(CAPTURE_ROUTE_TABLE)]);
    if (del.code !== 0) break;
    removed.push(`policy rule pref ${CAPTURE_RULE_PREF}`);
  }
  const routes = await run(ip, ['-4', 'route', 'show', 'table', String(CAPTURE_ROUTE_TABLE)]);
  if (routes.code === 0 && routes.stdout.trim() !== '') {
    const flush = await run(ip, ['-4', 'route', 'flush', 'table', String(CAPTURE_ROUTE_TABLE)]);
    if (flush.code !== 0) throw failed(`flushing routing table ${CAPTURE_ROUTE_TABLE}`, flush, CAP_HINT);
    removed.push(`routing table ${CAPTURE_ROUTE_TABLE}`);
  }
  return removed;
}

/**
 * The pods the capture table in the kernel (a previous agent's) has failing closed; none when
 * there is no table. A starting agent keeps them closed until it knows their policies.
 */
export async function failClosedInKernel(): Promise<string[]> {
  const r = await run(nftBinary(), ['-j', 'list', 'set', 'ip', CAPTURE_TABLE, 'fail-closed']);
  if (r.code !== 0) return [];
  try {
    const set = (JSON.parse(r.stdout).nftables as Array<{ set?: { elem?: unknown[] } }>).find((o) => o.set)?.set;
    return (set?.elem ?? []).filter((e): e is string => typeof e === 'string');
  } catch {
    return [];
  }
}

/** What of the capture the current network namespace holds (for status and tests). */
export async function captureInKernel(): Promise<{ table: boolean; rule: boolean; route: boolean }> {
  const t = await run(nftBinary(), ['list', 'table', 'ip', CAPTURE_TABLE]);
  const r = await run(ipBinary(), ['-4', 'rule', 'show', 'pref', String(CAPTURE_RULE_PREF)]);
  const rt = await run(ipBinary(), ['-4', 'route', 'show', 'table', String(CAPTURE_ROUTE_TABLE)]);
  return { table: t.code === 0, rule: r.code === 0 && r.stdout.includes(`lookup ${CAPTURE_ROUTE_TABLE}`), route: rt.code === 0 && rt.stdout.trim() !== '' };
}

/**
 * The inbound listener the capture table hands connections to, when a socket listens there in
 * this network namespace: an agent is running and capturing. null otherwise (no table, a table
 * with no listener, or one whose agent is gone).
 */
export async function captureListenerInUse(): Promise<string | null> {
  const t = await run(nftBinary(), ['list', 'table', 'ip', CAPTURE_TABLE]);
  const m = t.code === 0 ? /tproxy to (\d+\.\d+\.\d+\.\d+):(\d+)/.exec(t.stdout) : null;
  if (!m) return null;
  const [a, b, c, d] = m[1]!.split('.').map(Number);
  // /proc/net/tcp: local address as the host-order hex of the network-order bytes, state 0A = LISTEN.
  const addr = [d, c, b, a].map((x) => x!.toString(16).padStart(2, '0')).join('').toUpperCase();
  const port = Number(m[2]).toString(16).padStart(4, '0').toUpperCase();
  let text = '';
  try {
    text = fs.readFileSync('/proc/net/tcp', 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] === '0A' && (f[1] === `${addr}:${port}` || f[1] === `00000000:${port}`)) return `${m[1]}:${m[2]}`;
  }
  return null;
}
