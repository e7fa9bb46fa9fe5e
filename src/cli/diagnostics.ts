// `mesh-agent diagnostics endpoints svc/NAME -n NS`: what an agent's balancer holds for a
// Service, as `linkerd diagnostics endpoints` shows what the destination service resolves.
// The controller relays the question to the agents over their links (--node picks one; all
// connected agents otherwise), since each agent balances on its own.
// Exit codes: 0 ok, 1 error (controller unreachable, Service unknown to every agent asked), 2 usage.
import type { Command } from 'commander';
import { controllerUrl } from '../controller/addr.ts';
import { requestJson } from '../controller/client.ts';
import { PATH_DIAG_ENDPOINTS, type AgentAnswer } from '../controller/protocol.ts';
import type { EndpointSnapshot } from '../routing/balancer.ts';
import type { ServiceRef } from '../routing/router.ts';
import { DEFAULT_CONTROLLER, formatLatency } from './stat.ts';
import { table } from './table.ts';

export interface PortView {
  ref: ServiceRef;
  authority: string;
  problems: string[];
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
      if (p.endpoints.length === 0) notes.push(`${a.node}: ${p.authority}: no ready endpoints`);
      for (const e of p.endpoints) {
        rows.push([
          ...(several ? [a.node] : []), String(p.ref.port), e.ip, String(e.port), e.pod ?? '-', e.node ?? '-', e.state,
          formatLatency(e.ewmaMs), String(e.inflight), String(e.requests), String(e.failures),
        ]);
      }
    }
  }
  const headers = [...(several ? ['AGENT'] : []), 'SVC-PORT', 'IP', 'PORT', 'POD', 'NODE', 'STATE', 'EWMA', 'IN-FLIGHT', 'REQUESTS', 'FAILURES'];
  return [rows.length > 0 ? table(headers, rows) : 'No endpoints.', ...notes].join('\n');
}

export function registerDiagnostics(program: Command) {
  const diag = program.command('diagnostics').description('look inside the mesh: what the agents\' balancers hold');
  diag
    .command('endpoints')
    .description('the endpoints an agent balances a Service over, with state, EWMA latency and requests in flight')
    .argument('<service>', 'svc/NAME, or NAME.NAMESPACE.svc.cluster.local:PORT as Linkerd takes it')
    .option('-n, --namespace <ns>', 'namespace of the Service', 'default')
    .option('--node <node>', 'ask only the agent of this node (default: every connected agent)')
    .option('-o, --output <format>', 'table or json', 'table')
    .option('--controller <addr>', 'the controller (kubectl port-forward svc/mesh-agent-controller 8086 exposes it here)', DEFAULT_CONTROLLER)
    .action(async function (this: Command, target: string, o) {
      let svc: ReturnType<typeof parseServiceTarget>;
      let url: string;
      try {
        svc = parseServiceTarget(target, o.namespace);
        if (!['table', 'json'].includes(o.output)) throw new Error(`--output ${o.output}: use table or json`);
        url = controllerUrl(o.controller, '--controller');
      } catch (e) {
        this.error(`error: ${(e as Error).message}`);
      }
      const q = new URLSearchParams({ namespace: svc.namespace, name: svc.name });
      if (o.node) q.set('node', o.node);
      const res = (await requestJson(url, 'GET', `${PATH_DIAG_ENDPOINTS}?${q}`)) as { agents: AgentAnswer[] };
      if (o.output === 'json') process.stdout.write(JSON.stringify(res, null, 2) + '\n');
      else process.stdout.write(renderEndpoints(res.agents, svc.port) + '\n');
      if (res.agents.every((a) => a.error !== undefined)) {
        throw new Error(`no agent could answer for Service ${svc.namespace}/${svc.name}: ${res.agents.map((a) => `${a.node}: ${a.error}`).join('; ')}`);
      }
    });
}
