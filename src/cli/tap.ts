// `mesh-agent tap TYPE/NAME`: live requests from and to a resource, relayed by the controller
// from the agents, one `req`, `rsp` and `end` line per request in Linkerd's tap format.
// The proxy reports a request when it finishes, so the three lines of a request arrive
// together. Exit codes: 0 on Ctrl-C, 1 error (controller unreachable or gone), 2 usage.
import type { Command } from 'commander';
import { controllerUrl } from '../controller/addr.ts';
import { streamJson } from '../controller/client.ts';
import { PATH_TAP, type TapEndpoint, type TapOutput, type TapRequest } from '../controller/protocol.ts';
import { parseResource, resourceKind } from '../controller/stat.ts';
import { MAX_TAP_RPS } from '../telemetry/tap.ts';
import { DEFAULT_CONTROLLER } from './stat.ts';
import { GRPC_CODES } from '../controller/format.ts';

export function registerTap(program: Command) {
  program
    .command('tap')
    .description('stream the requests of a deployment, pod or namespace live, as Linkerd\'s tap does')
    .argument('<resource>', 'TYPE/NAME (deploy/web) or TYPE')
    .argument('[name]', 'NAME when TYPE is given alone')
    .option('-n, --namespace <ns>', 'namespace of the resource', 'default')
    .option('--to <resource>', 'only requests to this TYPE/NAME')
    .option('--to-namespace <ns>', 'namespace of --to (default: --namespace)')
    .option('--method <method>', 'only requests with this HTTP method')
    .option('--path <prefix>', 'only requests whose path starts with this')
    .option('--max-rps <n>', 'at most this many requests a second, over all agents', '100')
    .option('-o, --output <format>', 'text, wide (adds src_res/dst_res) or json', 'text')
    .option('--controller <addr>', 'the controller (kubectl port-forward svc/mesh-agent-controller 8086 exposes it here)', DEFAULT_CONTROLLER)
    .action(async function (this: Command, resource: string, name: string | undefined, o) {
      let req: TapRequest;
      let url: string;
      try {
        const target = name !== undefined ? `${resource}/${name}` : resource;
        const r = name !== undefined ? { kind: resourceKind(resource), name } : parseResource(target);
        if (o.to !== undefined) parseResource(o.to);
        const maxRps = Number(o.maxRps);
        if (!(maxRps > 0) || maxRps > MAX_TAP_RPS) throw new Error(`--max-rps ${o.maxRps}: use a number above 0, at most ${MAX_TAP_RPS}`);
        if (o.method !== undefined && !/^[A-Za-z]{1,32}$/.test(o.method)) throw new Error(`--method ${o.method}: use an HTTP method such as GET`);
        if (o.path !== undefined && !o.path.startsWith('/')) throw new Error(`--path ${o.path}: a path prefix starts with /`);
        if (!['text', 'wide', 'json'].includes(o.output)) throw new Error(`--output ${o.output}: use text, wide or json`);
        url = controllerUrl(o.controller, '--controller');
        req = { resource: `${r.kind}/${r.name}`, namespace: o.namespace, maxRps };
        if (o.to !== undefined) req.to = o.to;
        if (o.toNamespace !== undefined) req.toNamespace = o.toNamespace;
        if (o.method !== undefined) req.method = o.method.toUpperCase();
        if (o.path !== undefined) req.path = o.path;
      } catch (e) {
        this.error(`error: ${(e as Error).message}`);
      }
      const ac = new AbortController();
      process.once('SIGINT', () => ac.abort());
      process.once('SIGTERM', () => ac.abort());
      await streamJson(url, PATH_TAP, req, (line: TapOutput | { type: 'error'; error: string }) => {
        if (line.type === 'error') throw new Error(line.error);
        if (line.type === 'started') {
          process.stderr.write(`tapping ${req.resource} in ${req.namespace}: ${line.pods} pods, ${line.agents} agents\n`);
          return;
        }
        const out = o.output === 'json' ? tapJson(line).map((x) => JSON.stringify(x)) : tapLines(line, o.output === 'wide');
        process.stdout.write(out.join('\n') + '\n');
      }, ac.signal);
      if (!ac.signal.aborted) throw new Error('the controller ended the tap (it stopped or restarted); run tap again');
    });
}


const addr = (e: TapEndpoint) => `${e.ip.includes(':') ? `[${e.ip}]` : e.ip}:${e.port}`;

/** A record's identities, if it went through an mTLS tunnel (strings from an agent: checked and bounded). */
function tlsOf(r: Req['record']): { clientId: string; serverId: string } | null {
  const t = (r as { tls?: { clientId?: unknown; serverId?: unknown } }).tls;
  const ok = (v: unknown): v is string => typeof v === 'string' && v.length <= 512 && /^spiffe:\/\/[\x21-\x7e]+$/.test(v);
  return t && ok(t.clientId) && ok(t.serverId) ? { clientId: t.clientId, serverId: t.serverId } : null;
}

/** Linkerd's tls field: true through a tunnel, with both identities; no_identity otherwise (same node, unmeshed, identity off). */
function tlsText(r: Req['record']): string {
  const t = tlsOf(r);
  return t === null ? 'tls=no_identity' : `tls=true client_id=${t.clientId} server_id=${t.serverId}`;
}

type Req = Extract<TapOutput, { type: 'request' }>;

/** The three lines Linkerd's tap prints for a request (two when no response came). */
export function tapLines(ev: Req, wide = false): string[] {
  const r = ev.record;
  const flow = `id=${ev.id} proxy=${ev.direction === 'inbound' ? 'in' : 'out'} src=${addr(ev.source)} dst=${addr(ev.destination)} ${tlsText(r)}`;
  const res = wide ? resources(ev) : '';
  const lines = [`req ${flow} :method=${r.method} :authority=${r.authority} :path=${r.path}${res}`];
  if (r.status > 0) lines.push(`rsp ${flow} :status=${r.status} latency=${r.latencyUs}µs${res}`);
  const eos = r.grpcStatus !== undefined ? ` grpc-status=${GRPC_CODES[r.grpcStatus] ?? r.grpcStatus}` : r.status === 0 ? ` error=${JSON.stringify(r.error ?? 'no response')}` : '';
  lines.push(`end ${flow}${eos} duration=${r.durationUs}µs response-length=${r.responseBytes}B${res}`);
  return lines;
}

function resources(ev: Req): string {
  let s = '';
  if (ev.source.resource) s += ` src_res=${ev.source.resource} src_ns=${ev.source.namespace}`;
  if (ev.destination.resource) s += ` dst_res=${ev.destination.resource} dst_ns=${ev.destination.namespace}`;
  return s;
}

/** One object per line of tapLines, for scripts. */
export function tapJson(ev: Req): object[] {
  const r = ev.record;
  const t = tlsOf(r);
  const base = { id: ev.id, node: ev.node, proxyDirection: ev.direction === 'inbound' ? 'INBOUND' : 'OUTBOUND', source: ev.source, destination: ev.destination, tls: t === null ? 'no_identity' : 'true', ...(t !== null ? { clientId: t.clientId, serverId: t.serverId } : {}) };
  const out: object[] = [{ type: 'req', ...base, method: r.method, authority: r.authority, path: r.path, protocol: r.protocol, startedAt: Number.isFinite(r.startedAt) ? new Date(r.startedAt).toISOString() : null }];
  if (r.status > 0) out.push({ type: 'rsp', ...base, status: r.status, latencyUs: r.latencyUs });
  out.push({ type: 'end', ...base, ...(r.grpcStatus !== undefined ? { grpcStatus: GRPC_CODES[r.grpcStatus] ?? r.grpcStatus } : {}), ...(r.error ? { error: r.error } : {}), durationUs: r.durationUs, responseBytes: r.responseBytes, success: r.success });
  return out;
}
