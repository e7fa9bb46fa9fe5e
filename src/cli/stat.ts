// `mesh-agent stat TYPE [NAME]`: golden metrics per resource from the controller, as Linkerd's
// `stat` prints them. Requests are counted where they start, on the client's node, so a
// resource's row is the traffic sent TO it by meshed clients (Linkerd's inbound view).
// Exit codes: 0 ok, 1 error (controller unreachable, resource not found), 2 usage.
import type { Command } from 'commander';
import { controllerUrl } from '../controller/addr.ts';
import { requestJson } from '../controller/client.ts';
import { PATH_STAT } from '../controller/protocol.ts';
import { formatLatency, formatRps, formatSuccess } from '../controller/format.ts';
import { parseWindow, resourceKind, SHORT, type StatResult, type StatRow } from '../controller/stat.ts';

export const DEFAULT_CONTROLLER = '127.0.0.1:8086';

export function registerStat(program: Command) {
  program
    .command('stat')
    .description('success rate, requests per second, latency and connections of deployments, pods or namespaces, from the controller')
    .argument('<type>', 'deploy, pod, ns (also sts, ds, job, rs)')
    .argument('[name]', 'one resource; all of the type when left out')
    .option('-n, --namespace <ns>', 'namespace of the resources', 'default')
    .option('-A, --all-namespaces', 'resources in every namespace')
    .option('-t, --time-window <window>', 'how far back to look: 10s, 1m, 10m, 1h', '1m')
    .option('-o, --output <format>', 'table, wide (adds bytes per second) or json', 'table')
    .option('--controller <addr>', 'the controller (kubectl port-forward svc/mesh-agent-controller 8086 exposes it here)', DEFAULT_CONTROLLER)
    .action(async function (this: Command, type: string, name: string | undefined, o) {
      let kind: string;
      let url: string;
      try {
        kind = resourceKind(type);
        parseWindow(o.timeWindow, Infinity);
        if (!['table', 'wide', 'json'].includes(o.output)) throw new Error(`--output ${o.output}: use table, wide or json`);
        url = controllerUrl(o.controller, '--controller');
      } catch (e) {
        this.error(`error: ${(e as Error).message}`);
      }
      const allNs = Boolean(o.allNamespaces) || kind === 'namespace';
      const q = new URLSearchParams({ kind, window: o.timeWindow });
      if (!allNs) q.set('namespace', o.namespace);
      if (name) q.set('name', name);
      const res = (await requestJson(url, 'GET', `${PATH_STAT}?${q}`)) as StatResult;
      if (name && res.rows.length === 0) {
        throw new Error(`${SHORT[kind]}/${name} not found${kind === 'namespace' ? '' : allNs ? ' in any namespace' : ` in namespace ${o.namespace}`}: no agent reports a pod of it or traffic to it in the last ${o.timeWindow}`);
      }
      if (o.output === 'json') {
        process.stdout.write(JSON.stringify(statJson(res.rows), null, 2) + '\n');
        return;
      }
      if (res.rows.length === 0) {
        process.stderr.write('No traffic found.\n');
        return;
      }
      process.stdout.write(renderStat(res.rows, { wide: o.output === 'wide', namespaceColumn: allNs && kind !== 'namespace' }) + '\n');
    });
}

const dash = '-';

export { formatLatency };

export function formatRow(r: StatRow, wide: boolean): string[] {
  const cells = [
    `${r.meshedPods}/${r.totalPods}`,
    formatSuccess(r.successRate),
    formatRps(r.rps),
    formatLatency(r.latencyMsP50),
    formatLatency(r.latencyMsP95),
    formatLatency(r.latencyMsP99),
    String(r.tcpOpenConnections),
  ];
  if (wide) cells.push(r.readBytesPerSec === null ? dash : `${r.readBytesPerSec.toFixed(1)}B/s`, r.writeBytesPerSec === null ? dash : `${r.writeBytesPerSec.toFixed(1)}B/s`);
  return cells;
}

/** Linkerd's stat table: names left-aligned, numbers right-aligned, three spaces apart. */
export function renderStat(rows: StatRow[], o: { wide?: boolean; namespaceColumn?: boolean } = {}): string {
  const headers = [...(o.namespaceColumn ? ['NAMESPACE'] : []), 'NAME', 'MESHED', 'SUCCESS', 'RPS', 'LATENCY_P50', 'LATENCY_P95', 'LATENCY_P99', 'TCP_CONN', ...(o.wide ? ['READ_BYTES/SEC', 'WRITE_BYTES/SEC'] : [])];
  const left = o.namespaceColumn ? 2 : 1;
  const body = rows.map((r) => [...(o.namespaceColumn ? [r.namespace] : []), r.name, ...formatRow(r, Boolean(o.wide))]);
  const all = [headers, ...body];
  const widths = headers.map((_, i) => Math.max(...all.map((row) => row[i]!.length)));
  return all
    .map((row) => row.map((c, i) => (i < left ? (i === row.length - 1 ? c : c.padEnd(widths[i]!)) : c.padStart(widths[i]!))).join('   ').trimEnd())
    .join('\n');
}

/** Linkerd's `stat -o json` shape, one object per resource; null where there was no traffic. */
export function statJson(rows: StatRow[]) {
  return rows.map((r) => ({
    namespace: r.namespace,
    kind: r.kind,
    name: r.name,
    meshed: `${r.meshedPods}/${r.totalPods}`,
    requests: r.requests,
    success: r.successRate,
    rps: r.rps,
    latency_ms_p50: r.latencyMsP50,
    latency_ms_p95: r.latencyMsP95,
    latency_ms_p99: r.latencyMsP99,
    tcp_open_connections: r.tcpOpenConnections,
    read_bytes_per_sec: r.readBytesPerSec,
    write_bytes_per_sec: r.writeBytesPerSec,
  }));
}
