// `mesh-agent diagnostics endpoints svc/NAME -n NS`: what an agent's balancer holds for a
// Service, as `linkerd diagnostics endpoints` shows what the destination service resolves.
// The controller relays the question to the agents over their links (--node picks one; all
// connected agents otherwise), since each agent balances on its own.
// Exit codes: 0 ok, 1 error (controller unreachable, Service unknown to every agent asked), 2 usage.
import type { Command } from 'commander';
import { controllerUrl } from '../controller/addr.ts';
import { requestJson } from '../controller/client.ts';
import { PATH_DIAG_AUTHZ, PATH_DIAG_ENDPOINTS, PATH_DIAG_POLICY, type AgentAnswer } from '../controller/protocol.ts';
import type { AccessRecord, AccessRule } from '../policy/model.ts';
import type { ServerAuthz, ServerRecord } from '../policy/server-model.ts';
import type { BackendView, PolicyView, RuleView } from '../routing/policy-view.ts';
import type { HeaderModifier, RetryPolicy, RouteMatch, Source } from '../routing/route-model.ts';
import type { EndpointSnapshot } from '../routing/balancer.ts';
import type { ServiceRef } from '../routing/router.ts';
import { DEFAULT_CONTROLLER, formatLatency } from './stat.ts';
import { table } from './table.ts';

export interface PortView {
  ref: ServiceRef;
  authority: string;
  problems: string[];
  /** Topology aware routing: the mode and the endpoints it kept, or why hints are ignored. */
  topology?: string;
  endpoints: EndpointSnapshot[];
}

/** svc/NAME, service/NAME, NAME, or Linkerd's authority form NAME.NS.svc[.cluster.local][:PORT]. */
export function parseServiceTarget(text: string, namespace: string): { namespace: string; name: string; port?: number } {
  const slash = /^(?:svc|service|services)\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)$/.exec(text);
  if (slash) return { namespace, name: slash[1]! };
  const fqdn = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc(?:\.[a-z0-9.-]+)?(?::(\d{1,5}))?$/.exec(text);
  if (fqdn) {
    const port = fqdn[5] === undefined ? undefined : Number(fqdn[5]);
    if (port !== undefined && (port < 1 || port > 65535)) throw new Error(`${text}: port ${port} is out of range`);
    return { namespace: fqdn[3]!, name: fqdn[1]!, ...(port !== undefined ? { port } : {}) };
  }
  if (/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(text)) return { namespace, name: text };
  throw new Error(`${text}: name a Service as svc/NAME (with -n NAMESPACE) or NAME.NAMESPACE.svc.cluster.local:PORT`);
}

export function renderEndpoints(answers: AgentAnswer[], port?: number): string {
  const several = answers.length > 1;
  const rows: string[][] = [];
  const notes: string[] = [];
  for (const a of answers) {
    if (a.error !== undefined) {
      notes.push(`${a.node}: ${a.error}`);
      continue;
    }
    const ports = ((a.result as { ports?: PortView[] })?.ports ?? []).filter((p) => port === undefined || p.ref.port === port);
    for (const p of ports) {
      for (const pr of p.problems) notes.push(`${a.node}: ${p.authority}: ${pr}`);
      if (p.topology !== undefined) notes.push(`${a.node}: ${p.authority}: ${p.topology}`);
      if (p.endpoints.length === 0) notes.push(`${a.node}: ${p.authority}: no ready endpoints`);
      for (const e of p.endpoints) {
        rows.push([
          ...(several ? [a.node] : []), String(p.ref.port), e.ip, String(e.port), e.pod ?? '-', e.node ?? '-', e.state,
          formatLatency(e.ewmaMs), String(e.inflight), String(e.requests), String(e.failures), String(e.ejections),
        ]);
      }
    }
  }
  const headers = [...(several ? ['AGENT'] : []), 'SVC-PORT', 'IP', 'PORT', 'POD', 'NODE', 'STATE', 'EWMA', 'IN-FLIGHT', 'REQUESTS', 'FAILURES', 'EJECTIONS'];
  return [rows.length > 0 ? table(headers, rows) : 'No endpoints.', ...notes].join('\n');
}

const ms = (n: number) => (n % 60_000 === 0 ? `${n / 60_000}m` : n % 1000 === 0 ? `${n / 1000}s` : `${n}ms`);

function matchText(m: RouteMatch): string {
  const parts: string[] = [];
  if (m.method) parts.push(m.method);
  if (m.path) parts.push(m.path.type === 'Exact' ? `path = ${m.path.value}` : m.path.type === 'PathPrefix' ? `path ${m.path.value}*` : `path ~ ${m.path.value}`);
  for (const h of m.headers ?? []) parts.push(h.type === 'Exact' ? `${h.name}: ${h.value}` : `${h.name} ~ ${h.value}`);
  for (const q of m.queryParams ?? []) parts.push(q.type === 'Exact' ? `?${q.name}=${q.value}` : `?${q.name} ~ ${q.value}`);
  if (m.grpc) parts.push(`grpc ${m.grpc.type === 'Exact' ? '' : '~ '}${m.grpc.service ?? '*'}/${m.grpc.method ?? '*'}`);
  return parts.join(', ');
}

function sourceText(s: Source[]): string {
  if (s.length === 0) return '';
  const byObject = new Map<string, string[]>();
  for (const x of s) {
    const k = `${x.kind} ${x.namespace}/${x.name}`;
    const l = byObject.get(k) ?? [];
    l.push(x.annotation ?? x.field ?? '');
    byObject.set(k, l);
  }
  return ` (from ${[...byObject].map(([k, l]) => `${k}: ${l.join(', ')}`).join('; ')})`;
}

function retryText(r: RetryPolicy): string {
  const on: string[] = [];
  if (r.httpStatuses) on.push(r.httpStatuses.map(([a, b]) => (a === b ? String(a) : a === 500 && b === 599 ? '5xx' : `${a}-${b}`)).join(','));
  if (r.grpcCodes) on.push(`grpc ${r.grpcCodes.join(',')}`);
  on.push('connect errors');
  return `${r.limit} ${r.limit === 1 ? 'retry' : 'retries'} on ${on.join(', ')}${r.backoffMs !== undefined ? `, backoff ${ms(r.backoffMs)}` : ''}${r.timeoutMs !== undefined ? `, per-try timeout ${ms(r.timeoutMs)}` : ''}`;
}

/** A header modifier's edits in the order they apply. */
function editsText(m: HeaderModifier): string {
  return [...(m.remove ?? []).map((n) => `remove ${n}`), ...(m.set ?? []).map((h) => `set ${h.name}: ${h.value}`), ...(m.add ?? []).map((h) => `add ${h.name}: ${h.value}`)].join(', ');
}

/** A backend with its share and, when it has them, its own header edits (applied only to the requests it gets, its responses). */
function backendText(b: BackendView): string {
  const edits = [b.requestHeaders !== undefined ? `headers: ${editsText(b.requestHeaders)}` : '', b.responseHeaders !== undefined ? `response: ${editsText(b.responseHeaders)}` : ''].filter(Boolean);
  return `${b.namespace}/${b.name}:${b.port} ${b.share}% (weight ${b.weight})${edits.length > 0 ? ` {${edits.join('; ')}}` : ''}${b.problem ? ` [answers 500: ${b.problem}]` : ''}`;
}

function ruleText(r: RuleView): string[] {
  const name = r.route.kind === 'default' ? 'default route (the Service\'s annotations)' : `${r.route.kind} ${r.route.namespace}/${r.route.name} rule ${r.rule}${r.name ? ` "${r.name}"` : ''}`;
  const lines = [`  ${name}`];
  lines.push(`    match:    ${r.matches.length === 0 ? 'every request' : r.matches.map(matchText).join(' | ')}`);
  if (r.requestHeaders !== undefined) lines.push(`    headers:  ${editsText(r.requestHeaders)} (RequestHeaderModifier, on the request sent upstream)`);
  if (r.responseHeaders !== undefined) lines.push(`    response: ${editsText(r.responseHeaders)} (ResponseHeaderModifier, on the response the client gets)`);
  const rd = r.redirect;
  if (rd !== undefined) {
    const parts = [rd.scheme !== undefined ? `scheme ${rd.scheme}` : '', rd.hostname !== undefined ? `host ${rd.hostname}` : '', rd.port !== undefined ? `port ${rd.port}` : '',
      rd.path?.type === 'ReplaceFullPath' ? `path ${rd.path.value}` : rd.path !== undefined ? `path ${rd.path.prefix}* -> ${rd.path.value}*` : ''].filter(Boolean);
    lines.push(`    redirect: ${rd.statusCode}${parts.length > 0 ? ` to ${parts.join(', ')}` : ' to the same URL'} (RequestRedirect, answered by the proxy)`);
  }
  lines.push(`    backends: ${rd !== undefined ? 'none (the proxy answers)' : r.backends.length === 0 ? 'the Service itself' : r.backends.map(backendText).join(', ')}`);
  // A redirect is answered at once and never retried: the Service's timeouts and retries do not apply to it.
  if (rd !== undefined) return lines;
  const t = r.timeouts;
  const tt = t === null ? 'none' : [t.requestMs !== undefined ? `request ${ms(t.requestMs)}` : '', t.backendRequestMs !== undefined ? `backend request ${ms(t.backendRequestMs)}` : '', t.idleMs !== undefined ? `idle ${ms(t.idleMs)}` : ''].filter(Boolean).join(', ');
  lines.push(`    timeouts: ${tt}${sourceText(r.timeoutSources)}`);
  const retries = [r.httpRetry !== null ? `HTTP: ${retryText(r.httpRetry)}` : '', r.grpcRetry !== null && JSON.stringify(r.grpcRetry) !== JSON.stringify(r.httpRetry) ? `gRPC: ${retryText(r.grpcRetry)}` : ''].filter(Boolean);
  lines.push(`    retry:    ${retries.length === 0 ? 'none' : retries.join('; ')}${sourceText(r.retrySources)}`);
  return lines;
}

const SELECTED: Record<PolicyView['selected'], string> = {
  consumer: 'consumer routes (in the client\'s namespace)',
  producer: 'producer routes (in the Service\'s namespace)',
  trafficsplit: 'SMI TrafficSplit',
  default: 'no routes; the Service\'s retry and timeout annotations',
  none: 'no routes, retries or timeouts: requests are balanced over the Service\'s endpoints',
};

export function renderPolicy(answers: AgentAnswer[], port?: number): string {
  const ok = answers.filter((a) => a.error === undefined);
  const out: string[] = [];
  const first = ok[0];
  if (first !== undefined) {
    const ports = ((first.result as { ports?: PolicyView[] })?.ports ?? []).filter((p) => port === undefined || p.service.port === port);
    for (const p of ports) {
      out.push(`Service ${p.service.namespace}/${p.service.name} port ${p.service.port}, clients in namespace ${p.clientNamespace}: ${SELECTED[p.selected]}`);
      for (const r of p.rules) out.push(...ruleText(r));
      for (const o of p.overridden) out.push(`  not applied: ${o.kind} ${o.namespace}/${o.name}: ${o.reason}`);
      for (const e of p.annotationErrors) out.push(`  annotation ignored: ${e}`);
      if (p.rules.some((r) => r.httpRetry !== null || r.grpcRetry !== null)) {
        out.push(`  retry budget: ${Math.round(p.budget.ratio * 100)}% of the last ${p.budget.windowSeconds} s of requests plus ${p.budget.minPerSecond} a second, per client workload; backoff ${p.backoff.minMs}-${p.backoff.maxMs} ms with jitter`);
      }
    }
    if (ports.length === 0) out.push(`No port ${port} on the Service.`);
    // Every agent holds the same routes; one that does not is behind (or ahead) in discovery.
    const text = JSON.stringify(first.result);
    for (const a of ok.slice(1)) if (JSON.stringify(a.result) !== text) out.push(`${a.node}: answers differently (its discovery is at another version); ask it with --node ${a.node}`);
  }
  for (const a of answers) if (a.error !== undefined) out.push(`${a.node}: ${a.error}`);
  return out.join('\n');
}

/** pod/NAME, po/NAME or NAME. */
export function parsePodTarget(text: string): string {
  const m = /^(?:(?:pod|pods|po)\/)?([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(text);
  if (!m || m[1]!.length > 253) throw new Error(`${text}: name a pod as pod/NAME (with -n NAMESPACE)`);
  return m[1]!;
}

function ruleLine(r: AccessRule): string {
  if (r.kind === 'TCPRoute') return `TCPRoute ${r.name}: whole connections on ${r.ports ? `ports ${r.ports.join(', ')}` : 'every port'}`;
  const ms = r.matches.map((m) => `${m.name}: ${m.methods ? m.methods.join('|') : 'any method'} ${m.pathRegex ?? 'any path'}${(m.headers ?? []).map((h) => `, ${h.name} ~ ${h.regex}`).join('')}`);
  return `HTTPRouteGroup ${r.name}: requests matching ${ms.join('; ')}`;
}

function authzLine(a: ServerAuthz): string {
  const ids = a.identities === undefined ? 'any client' : a.identities.map((i) => (i.namespace === '*' ? 'any meshed client' : `${i.namespace}/${i.serviceAccount}`)).join(', ');
  const nets = a.clusterNetworks === true ? ' from the cluster networks' : a.networks === undefined ? '' : ` from ${a.networks.map((n) => `${n.cidr}${n.except?.length ? ` except ${n.except.join(', ')}` : ''}`).join(', ')}`;
  return `${ids}${nets}`;
}

/** What `diagnostics authz` prints of the agent's answer (agent/inbound.ts describe()). */
export function renderAuthz(answers: AgentAnswer[]): string {
  const found = answers.filter((a) => a.error === undefined);
  if (found.length === 0) return answers.map((a) => `${a.node}: ${a.error}`).join('\n');
  const out: string[] = [];
  for (const a of found) {
    const d = a.result as { pod: string; ip: string; serviceAccount: string; identity: string; defaultPolicy: string; defaultFrom: string; mode: string; decidedBy: string; failsClosed: boolean; skipInboundPorts: string; clusterNetworks: string[]; trafficTargets: AccessRecord[]; servers?: Array<ServerRecord & { ports: number[] }> };
    out.push(`pod ${d.pod} (${d.ip}) on node ${a.node}, ServiceAccount ${d.serviceAccount} (${d.identity})`);
    out.push(`  decided by:        ${d.decidedBy}`);
    out.push(`  default policy:    ${d.defaultPolicy} (${d.defaultFrom})`);
    out.push(`  fails closed:      ${d.failsClosed ? 'yes: while no agent runs on its node, connections to it are dropped until one is back' : 'no: while no agent runs on its node, clients reach it directly'}`);
    out.push(`  skip-inbound:      ${d.skipInboundPorts || 'none'}`);
    if (/cluster-/.test(d.defaultPolicy)) out.push(`  cluster networks:  ${d.clusterNetworks.join(', ')}`);
    if (d.trafficTargets.length === 0) out.push('  TrafficTargets:    none');
    for (const t of d.trafficTargets) {
      out.push(`  TrafficTarget ${t.namespace}/${t.name}${t.destination.port !== undefined ? ` (port ${t.destination.port})` : ''}: from ${t.sources.map((s) => `${s.namespace}/${s.serviceAccount}`).join(', ')}`);
      for (const r of t.rules) out.push(`    ${ruleLine(r)}`);
      for (const p of t.problems ?? []) out.push(`    problem: ${p}`);
    }
    for (const s of d.servers ?? []) {
      out.push(`  Server ${s.namespace}/${s.name}: port ${s.port}${typeof s.port === 'string' ? ` (${s.ports.join(', ')})` : ''}${s.proxyProtocol ? `, ${s.proxyProtocol}` : ''}, accessPolicy ${s.accessPolicy}`);
      for (const a of s.authorizations) out.push(`    ${a.kind ?? 'AuthorizationPolicy'} ${a.name}: ${authzLine(a)}`);
      for (const r of s.routes) {
        out.push(`    HTTPRoute ${r.name} (${r.group}): ${r.matches.map((m) => matchText(m) || 'every request').join(' | ')}`);
        for (const a of r.authorizations) out.push(`      AuthorizationPolicy ${a.name}: ${authzLine(a)}`);
      }
      for (const p of s.problems ?? []) out.push(`    problem: ${p}`);
    }
  }
  return out.join('\n');
}

/**
 * One diagnostics subcommand: a Service target, the options every one has, the question relayed
 * to the agents through the controller, the answers rendered (or as JSON); exit 1 when no agent
 * could answer, 2 on usage.
 */
function relayed(cmd: Command, o: {
  path: string;
  /** Extra checks of the options, throwing a usage error; and extra query parameters. */
  query?: (opts: Record<string, any>, svc: { namespace: string; name: string }) => Record<string, string>;
  render: (answers: AgentAnswer[], port?: number) => string;
}): Command {
  return cmd
    .argument('<service>', 'svc/NAME, or NAME.NAMESPACE.svc.cluster.local:PORT as Linkerd takes it')
    .option('-n, --namespace <ns>', 'namespace of the Service', 'default')
    .option('--node <node>', 'ask only the agent of this node (default: every connected agent)')
    .option('-o, --output <format>', 'table or json', 'table')
    .option('--controller <addr>', 'the controller (kubectl port-forward svc/mesh-agent-controller 8086 exposes it here)', DEFAULT_CONTROLLER)
    .action(async function (this: Command, target: string, opts) {
      let svc: ReturnType<typeof parseServiceTarget>;
      let url: string;
      let extra: Record<string, string>;
      try {
        svc = parseServiceTarget(target, opts.namespace);
        if (!['table', 'json'].includes(opts.output)) throw new Error(`--output ${opts.output}: use table or json`);
        extra = o.query?.(opts, svc) ?? {};
        url = controllerUrl(opts.controller, '--controller');
      } catch (e) {
        this.error(`error: ${(e as Error).message}`);
      }
      const q = new URLSearchParams({ namespace: svc.namespace, name: svc.name, ...extra });
      if (opts.node) q.set('node', opts.node);
      const res = (await requestJson(url, 'GET', `${o.path}?${q}`)) as { agents: AgentAnswer[] };
      if (opts.output === 'json') process.stdout.write(JSON.stringify(res, null, 2) + '\n');
      else process.stdout.write(o.render(res.agents, svc.port) + '\n');
      if (res.agents.every((a) => a.error !== undefined)) {
        throw new Error(`no agent could answer for Service ${svc.namespace}/${svc.name}: ${res.agents.map((a) => `${a.node}: ${a.error}`).join('; ')}`);
      }
    });
}

export function registerDiagnostics(program: Command) {
  const diag = program.command('diagnostics').description('look inside the mesh: what the agents\' balancers and routes hold');
  relayed(diag.command('endpoints').description('the endpoints an agent balances a Service over, with state, EWMA latency and requests in flight'), {
    path: PATH_DIAG_ENDPOINTS,
    render: renderEndpoints,
  });
  relayed(
    diag.command('policy')
      .description('the routes, backends and weights, timeouts and retry policy that apply to a Service\'s requests, and where each came from')
      .option('--from-namespace <ns>', 'as seen by clients in this namespace (consumer routes); default the Service\'s namespace'),
    {
      path: PATH_DIAG_POLICY,
      query: (opts, svc) => {
        if (opts.fromNamespace !== undefined && !/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(opts.fromNamespace)) throw new Error(`--from-namespace ${opts.fromNamespace}: not a namespace name`);
        return { fromNamespace: opts.fromNamespace ?? svc.namespace };
      },
      render: renderPolicy,
    },
  );
  diag
    .command('authz')
    .description('the inbound policy that applies to a meshed pod, and why: its default policy and where it came from, the TrafficTargets of its ServiceAccount, whether it fails closed')
    .argument('<pod>', 'pod/NAME')
    .option('-n, --namespace <ns>', 'namespace of the pod', 'default')
    .option('--node <node>', 'ask only the agent of this node (default: every connected agent; the pod\'s node answers)')
    .option('-o, --output <format>', 'table or json', 'table')
    .option('--controller <addr>', 'the controller (kubectl port-forward svc/mesh-agent-controller 8086 exposes it here)', DEFAULT_CONTROLLER)
    .action(async function (this: Command, target: string, o) {
      let name: string;
      let url: string;
      try {
        name = parsePodTarget(target);
        if (!['table', 'json'].includes(o.output)) throw new Error(`--output ${o.output}: use table or json`);
        url = controllerUrl(o.controller, '--controller');
      } catch (e) {
        this.error(`error: ${(e as Error).message}`);
      }
      const q = new URLSearchParams({ namespace: o.namespace, name });
      if (o.node) q.set('node', o.node);
      const res = (await requestJson(url, 'GET', `${PATH_DIAG_AUTHZ}?${q}`)) as { agents: AgentAnswer[] };
      if (o.output === 'json') process.stdout.write(JSON.stringify(res, null, 2) + '\n');
      else process.stdout.write(renderAuthz(res.agents) + '\n');
      if (res.agents.every((a) => a.error !== undefined)) {
        throw new Error(`no agent knows pod ${o.namespace}/${name} as a meshed pod of its node${res.agents.length === 0 ? ' (no agent is connected to the controller)' : ''}`);
      }
    });
}
