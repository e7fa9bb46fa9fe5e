// `mesh-agent status`: the node agent's state from its admin API, as a table or JSON.
// Exit codes scripts can trust: 0 healthy, 1 degraded (reasons printed; an agent whose /status
// answers a server error among them), 2 agent unreachable.
import type { Command } from 'commander';
import { assessHealth } from '../agent/health.ts';
import { parseHostPort } from './addr.ts';
import { table } from './table.ts';
import { httpGet } from '../util/http-get.ts';
import { parseMs } from './run-config.ts';
import { TOKEN_HINT } from '../k8s/watch-errors.ts';

export const EXIT_HEALTHY = 0;
export const EXIT_DEGRADED = 1;
export const EXIT_UNREACHABLE = 2;

export function registerStatus(program: Command) {
  program
    .command('status')
    .description('show this node\'s agent: BPF features, datapath, maps, meshed pods, proxy, counters, errors')
    .option('--admin <ip:port>', 'the agent\'s admin address', '127.0.0.1:4191')
    .option('-o, --output <format>', 'table or json', 'table')
    .option('--timeout <duration>', 'give up on the agent after this long: milliseconds, or 500ms, 5s, 1m', '3s')
    .action(async function (this: Command, o) {
      // Usage errors exit 2 here (main): exit 1 would read as "degraded", and a bad --timeout
      // reached fetch() and was reported as an unreachable agent.
      let url: string;
      let timeoutMs: number;
      try {
        if (!['table', 'json'].includes(o.output)) throw new Error(`--output ${o.output}: use table or json`);
        const admin = parseHostPort(o.admin, '--admin', '127.0.0.1', 4191);
        url = `http://${admin.host.includes(':') ? `[${admin.host}]` : admin.host}:${admin.port}/status`;
        timeoutMs = parseMs(o.timeout, '--timeout', '5s', 1);
      } catch (e) {
        this.error(`error: ${(e as Error).message}`);
      }
      let s: any;
      try {
        s = JSON.parse(await getText(url, timeoutMs));
      } catch (e) {
        if (e instanceof ServerError) {
          // Reached, and failing: degraded, with what the agent said (not "is it running?").
          const reasons = [`the agent answered /status with HTTP ${e.status}: ${e.body.trim() || 'no message'}`];
          if (o.output === 'json') process.stdout.write(JSON.stringify({ reachable: true, healthy: false, reasons, status: null }, null, 2) + '\n');
          else process.stdout.write(`STATUS: degraded\n${reasons.map((r) => `  - ${r}`).join('\n')}\n`);
          process.exit(EXIT_DEGRADED);
        }
        const why = (e as Error).message;
        if (o.output === 'json') process.stdout.write(JSON.stringify({ reachable: false, admin: url, error: why }, null, 2) + '\n');
        process.stderr.write(`mesh-agent status: the agent at ${url} is unreachable (${why}); is it running on this node? pass --admin IP:PORT\n`);
        process.exit(EXIT_UNREACHABLE);
      }
      const health = assessHealth(s);
      if (o.output === 'json') process.stdout.write(JSON.stringify({ reachable: true, ...health, status: s }, null, 2) + '\n');
      else process.stdout.write(render(s, health) + '\n');
      process.exit(health.healthy ? EXIT_HEALTHY : EXIT_DEGRADED);
    });
}

/** A 5xx answer: the agent is there, and its /status failed. */
class ServerError extends Error {
  readonly status: number;
  readonly body: string;
  constructor(status: number, body: string) {
    super(`HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * GET with node:http, not fetch(): fetch refuses the Fetch standard's "bad ports" (6000, 6665-6669,
 * 10080, ...) whatever listens there, so an agent given such an --admin-port was "unreachable".
 */
async function getText(url: string, timeoutMs: number): Promise<string> {
  let a;
  try {
    a = await httpGet(url, { timeoutMs });
  } catch (e) {
    throw new Error((e as NodeJS.ErrnoException).code ?? (e as Error).message);
  }
  if (a.status === 200) return a.body;
  throw a.status >= 500 ? new ServerError(a.status, a.body) : new Error(`HTTP ${a.status}`);
}

export function render(s: any, health: { healthy: boolean; reasons: string[] }): string {
  const c = s.datapath.counters;
  const out: string[] = [];
  out.push(`mesh-agent ${s.version} on node ${s.node}, up ${s.uptimeSeconds}s, kernel ${s.kernel}`);
  out.push(health.healthy ? 'STATUS: healthy' : `STATUS: degraded\n${health.reasons.map((r) => `  - ${r}`).join('\n')}`);
  out.push('', 'BPF FEATURES');
  out.push(table(['KIND', 'NAME', 'STATUS', 'REQUIRED', 'NOTE'],
    (s.features ?? []).map((f: any) => [f.kind, f.name, f.status, f.required ? 'yes' : 'no', f.fix && f.status !== 'ok' ? `${f.note}; fix: ${f.fix}` : f.note])));
  out.push('', 'PROGRAMS');
  out.push(table(['SECTION', 'ID', 'ATTACHED TO'], s.datapath.programs.map((p: any) => [p.section, p.id ?? '-', p.attachedTo ?? 'not attached'])));
  out.push('', 'MAPS');
  out.push(table(['NAME', 'TYPE', 'USED', 'CAPACITY'], s.datapath.maps.map((m: any) => [m.name, m.type, m.used, m.maxEntries])));
  out.push('', 'PODS');
  out.push(table(['NAMESPACE', 'NAME', 'IP', 'MESHED', 'SKIP-OUT', 'SKIP-IN', 'OPAQUE', 'NOTE'],
    s.pods.map((p: any) => [p.namespace, p.name, p.ip ?? '-', p.meshed ? 'yes' : 'no', p.skipOutboundPorts || '-', p.skipInboundPorts || '-', p.opaquePorts ?? '-', [p.meshed ? '' : p.reason ?? '', ...p.annotationErrors].filter(Boolean).join('; ') || '-'])));
  out.push('', `PROXY ${s.proxy.listen}: ${s.proxy.open} open, ${s.proxy.accepted} accepted, ${s.proxy.refusedNoRecord} refused without record, ${s.proxy.refusedOverCap} over the cap${s.proxy.maxConnections !== undefined ? ` of ${s.proxy.maxConnections}` : ''}, by protocol ${counts(s.proxy.byProtocol)}, decided by ${counts(s.proxy.byDetection)}${s.proxy.eagerDialSkipped !== undefined ? `, HTTP/1 without eager dial ${s.proxy.eagerDialSkipped} (dialled late ${s.proxy.eagerDialLate}, ${s.proxy.knownHttp1Dests} known destinations)` : ''}${s.proxy.nativeIoClients !== undefined ? `, driven from C++ (--native-io) ${s.proxy.nativeIoClients} HTTP/1 clients and ${s.proxy.nativeIoUpstreams} upstreams` : ''}`);
  const workers: any[] = s.proxy.workers ?? [];
  if (workers.length > 1) {
    out.push('', 'PROXY WORKERS');
    out.push(table(['WORKER', 'THREAD', 'STATE', 'ACCEPTED', 'OPEN', 'CPU', 'LAG', 'RESTARTS', 'STUCK'],
      workers.map((w) => [String(w.index), w.thread, w.state, String(w.accepted), String(w.open), `${w.cpuSeconds.toFixed(1)}s`, w.lagMs === null ? '-' : `${w.lagMs.toFixed(1)}ms`, String(w.restarts), String(w.stuck)])));
  }
  out.push(...renderInbound(s.inbound));
  out.push(`DATAPATH: redirected ${c.redirected}, skipped by port ${c.skippedPort}, skipped inbound ${c.skippedInbound}, unmeshed ${c.unmeshed}, established ${c.established}, closed ${c.closed}, lookups ${c.lookups} (missed ${c.lookupMisses}), map full ${c.mapFull}`);
  const l = s.controller;
  out.push(l ? `CONTROLLER ${l.url}: ${l.state}${l.lastAckAt ? `, last report acknowledged ${l.lastAckAt}` : ''}, backlog ${l.backlog}/${l.backlogLimit}, sent ${l.sent}, dropped ${l.dropped}, reconnects ${l.reconnects}, taps ${l.activeTaps}${l.state !== 'connected' && l.lastError ? ` (${l.lastError})` : ''}` : 'CONTROLLER: none (run with --controller HOST:PORT to report)');
  const d = s.discovery;
  out.push(d ? `DISCOVERY ${d.url}: ${d.state}${d.connectedSince ? ` since ${d.connectedSince}` : ''}, last update ${d.lastUpdateAt ?? 'never'}, ${d.services} services, ${d.slices} slices, ${d.endpoints} endpoints, ${d.pods} pods, reconnects ${d.reconnects}${d.failedClosed ? `, ${d.failedClosed} routes failing closed` : ''}${d.state !== 'synced' && d.lastError ? ` (${d.lastError})` : ''}` : 'DISCOVERY: none (Services resolve through the controller: run with --controller HOST:PORT)');
  // A kind the API server refuses (403, or 401: the token): the agent's view of it is frozen until the grant; said here, not only once in RECENT ERRORS.
  for (const [kind, r] of Object.entries<any>(s.podSource?.refused ?? {})) {
    const fix = r.grant ? `grant its ServiceAccount ${r.grant} (the ClusterRole from mesh-agent install)` : TOKEN_HINT;
    out.push(`POD SOURCE: the API server refuses ${kind} since ${r.since} (HTTP ${r.status} on ${r.verb}: ${r.message}); the agent keeps the ${kind} it last read: ${fix}`);
  }
  const topo = s.topology as { zone: string | null; why: string | null } | undefined;
  if (topo) out.push(topo.zone !== null ? `TOPOLOGY: zone ${topo.zone} (zone hints apply)` : `TOPOLOGY: no zone: ${topo.why}`);
  out.push(...identityLines(s.identity));
  if (s.recentErrors?.length) out.push('', 'RECENT ERRORS', ...s.recentErrors.map((e: any) => `  ${e.at}  ${e.msg}`));
  return out.join('\n');
}

/** Certificates, trust anchors and tunnels (docs/identity.md); one line saying it is off otherwise. */
export function identityLines(id: any): string[] {
  if (!id) return ['IDENTITY: off (meshed pods\' bytes cross the network between nodes as sent; run with --identity-addr HOST:PORT for mTLS)'];
  const out = ['', `IDENTITY ${id.trustDomain}, identity service ${id.identityService}`];
  out.push(table(['IDENTITY', 'STATE', 'SERIAL', 'NOT AFTER', 'NEXT RENEWAL', 'FAILURES'],
    (id.certificates ?? []).map((c: any) => [c.identity, c.state, c.serial ?? '-', c.notAfter ?? '-', c.nextRenewal ?? '-', String(c.failures)])));
  out.push('TRUST ANCHORS');
  out.push(table(['SUBJECT', 'NOT AFTER', 'DAYS LEFT'], (id.trustAnchors ?? []).map((a: any) => [a.subject, a.notAfter, `${a.daysLeft}${a.warning ? ' (rotate)' : ''}`])));
  const t = id.tunnels;
  if (t) {
    out.push(`TUNNELS :${t.port}: out ${t.client.connectionsOpen} connections open (${t.client.connectionsOpened} opened), ${t.client.streams} streams, servers refused ${counts(t.client.refusedServers)}, no certificate ${t.client.noCredential}, waited for discovery's first sync ${t.client.waitedForDiscovery ?? 0} (${t.client.waitingForDiscovery ?? 0} now); ` +
      `in ${t.server.open} connections open (${t.server.accepted} accepted), ${t.server.streams} streams (${t.server.inspected ?? 0} whose policy decides request by request), clients refused ${counts(t.server.refusedClients)}, streams refused ${counts(t.server.refusedStreams)}, handshakes waiting for a certificate ${t.server.waitingHandshakes ?? 0}, waited for their pod to be known ${t.server.waitedForPods ?? 0} (${t.server.waitingForPods ?? 0} now)`);
  }
  return out;
}

/** The inbound side (docs/policy.md): the capture, and each meshed pod's policy, fail-closed ones marked. */
export function renderInbound(i: any): string[] {
  if (!i) return [];
  if (i.capture === 'off') return ['', 'INBOUND: no capture (--inbound-addr off): policies bind meshed clients of this node only'];
  const mode: Record<string, string> = {
    waiting: 'not yet capturing (waiting for this node\'s pods and the controller\'s TrafficTargets; a previous agent\'s capture stays as it was)',
    starting: 'not yet capturing (waiting for the controller\'s TrafficTargets): tunnels are served, fail-closed pods\' other connections are dropped',
    capturing: 'capturing',
    held: 'held (stopping: fail-closed pods\' connections are dropped until an agent is back)',
  };
  const out = ['', `INBOUND ${i.listen}: ${mode[i.capture] ?? i.capture}, cluster default ${i.defaultPolicy}${i.error ? ` (error: ${i.error})` : ''}`];
  if (i.pods.length > 0) {
    out.push(table(['NAMESPACE', 'NAME', 'SERVICE ACCOUNT', 'POLICY', 'FROM', 'FAILS CLOSED', 'TRAFFIC TARGETS'],
      i.pods.map((p: any) => [p.namespace, p.name, p.serviceAccount, p.mode === 'smi' ? 'TrafficTargets' : p.defaultPolicy, p.mode === 'smi' ? `ServiceAccount ${p.namespace}/${p.serviceAccount}` : p.defaultFrom, p.failsClosed ? 'yes' : 'no', p.trafficTargets.join(', ') || '-'])));
  }
  return out;
}

/** `{a: 1, b: 2}` as `a=1 b=2`; `-` when empty or absent (an older agent's status has no byDetection). */
function counts(o: Record<string, number> | undefined): string {
  return Object.entries(o ?? {}).map(([k, v]) => `${k}=${v}`).join(' ') || '-';
}
