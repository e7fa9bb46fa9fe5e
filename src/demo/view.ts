// What the demo prints while it runs (pure: data in, lines out).
import { EXPECTED_SUCCESS } from './traffic-mix.ts';

export const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export interface BotTotals { sent: number; ok: number; failed: number; errors: number }

export function botLine(bot: BotTotals | undefined): string {
  if (!bot || bot.sent === 0) return 'vote-bot: no requests answered yet';
  return `vote-bot saw ${bot.sent} requests: ${bot.ok} ok, ${bot.failed} answered 5xx, ${bot.errors} without answer (${pct(bot.ok / bot.sent)} success; the mix makes it ${pct(EXPECTED_SUCCESS.web)})`;
}

export function mailerLine(delivered: number | undefined, replicas: number): string {
  return `mailer (SMTP, the server speaks first, port 2525 in no opaque list; ${replicas} replicas behind one Service, a pod picked per connection): ${delivered ?? 0} mails accepted through the mesh`;
}

/** Every node agent's own counters (mesh-agent status on each node), added up. */
export function agentLines(statuses: any[]): string[] {
  const sum = (f: (s: any) => number) => statuses.reduce((n, s) => n + f(s), 0);
  const merge = (f: (s: any) => Record<string, number> | undefined) => {
    const out: Record<string, number> = {};
    for (const s of statuses) for (const [k, v] of Object.entries(f(s) ?? {})) out[k] = (out[k] ?? 0) + v;
    return Object.entries(out).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(' ') || '-';
  };
  const pods = sum((s) => s.pods.length);
  const meshed = sum((s) => s.pods.filter((x: any) => x.meshed).length);
  return [
    `agents on ${statuses.length} nodes: ${meshed}/${pods} pods meshed; proxies ${sum((s) => s.proxy.accepted)} connections accepted (${merge((s) => s.proxy.byProtocol)}), ${sum((s) => s.proxy.open)} open, ${sum((s) => s.proxy.refusedNoRecord)} refused without record, ${sum((s) => s.proxy.noEndpoints ?? 0)} to a Service without endpoints`,
    `proxies decided by: ${merge((s) => s.proxy.byDetection)}`,
    `datapath: ${sum((s) => Number(s.datapath.counters.redirected))} connects redirected, ${sum((s) => Number(s.datapath.counters.skippedPort))} skipped by port, ${sum((s) => Number(s.datapath.counters.unmeshed))} from unmeshed processes`,
    `discovery: ${statuses.map((s) => `${s.node} ${s.discovery?.state ?? 'off'} (${s.discovery?.services ?? 0} Services, ${s.discovery?.endpoints ?? 0} endpoints)`).join(', ')}`,
    mtlsLine(statuses),
  ];
}

/** Whether traffic between nodes is encrypted, and what shows it (docs/identity.md). */
export function mtlsLine(statuses: any[]): string {
  const on = statuses.filter((s) => s.identity);
  if (on.length === 0) return 'mTLS: off (identity not configured): bytes between nodes cross the network as the pods sent them';
  const certs = on.flatMap((s) => s.identity.certificates ?? []);
  const ready = certs.filter((c: any) => c.state === 'ready').length;
  const t = (f: (x: any) => number) => on.reduce((n, s) => n + f(s.identity.tunnels ?? {}), 0);
  const refused = t((x) => Object.values<number>(x.server?.refusedClients ?? {}).reduce((a, b) => a + b, 0) + Object.values<number>(x.client?.refusedServers ?? {}).reduce((a, b) => a + b, 0));
  return `mTLS between nodes: on (${on.length}/${statuses.length} agents); ${ready}/${certs.length} workload certificates (SPIFFE IDs of the ServiceAccounts), ${t((x) => x.client?.streams ?? 0)} connections tunnelled (TLS 1.3, HBONE on :${on[0].identity.tunnels?.port ?? 15008}) over ${t((x) => x.client?.connectionsOpen ?? 0)} agent-to-agent connections, ${refused} handshakes refused; same-node calls stay on the node`;
}

export function header(elapsedS: number, width = 78): string {
  const t = new Date().toTimeString().slice(0, 8);
  const title = `── ${t}, ${elapsedS}s in `;
  return title + '─'.repeat(Math.max(0, width - title.length));
}

/** Pretty-prints the expected success rates so a reader can hold the table against them. */
export function expectationLine(): string {
  return `expected success: web ${pct(EXPECTED_SUCCESS.web)} (1 vote in 3 is for :doughnut:), voting ${pct(EXPECTED_SUCCESS.voting)}, emoji ${pct(EXPECTED_SUCCESS.emoji)}`;
}
