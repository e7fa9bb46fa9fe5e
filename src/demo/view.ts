// What the demo prints while it runs (pure: data in, lines out).
import { table } from '../cli/table.ts';
import type { DeploymentTotals } from './metrics-summary.ts';
import { EXPECTED_SUCCESS } from './traffic-mix.ts';

export const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export interface BotTotals { sent: number; ok: number; failed: number; errors: number }

export function botLine(bot: BotTotals | undefined): string {
  if (!bot || bot.sent === 0) return 'vote-bot: no requests answered yet';
  return `vote-bot saw ${bot.sent} requests: ${bot.ok} ok, ${bot.failed} answered 5xx, ${bot.errors} without answer (${pct(bot.ok / bot.sent)} success; the mix makes it ${pct(EXPECTED_SUCCESS.web)})`;
}

export function mailerLine(delivered: number | undefined): string {
  return `mailer (SMTP, the server speaks first, port 2525 in no opaque list): ${delivered ?? 0} mails accepted through the mesh`;
}

/** The agent's own counters (mesh-agent status), for when no controller is there to ask. */
export function agentLines(status: any): string[] {
  const c = status.datapath.counters;
  const p = status.proxy;
  const counts = (o: Record<string, number> | undefined) => Object.entries(o ?? {}).map(([k, v]) => `${k}=${v}`).join(' ') || '-';
  const byProto = counts(p.byProtocol);
  const meshed = status.pods.filter((x: any) => x.meshed).length;
  return [
    `agent: ${meshed}/${status.pods.length} pods meshed; proxy ${p.accepted} connections accepted (${byProto}), ${p.open} open, ${p.refusedNoRecord} refused without record`,
    `proxy decided by: ${counts(p.byDetection)}`,
    `datapath: ${c.redirected} connects redirected, ${c.skippedPort} skipped by port, ${c.unmeshed} from unmeshed processes`,
  ];
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

/** Success per deployment as the mesh measured it (the agent's inbound response_total), next to what the mix implies. */
export function successTable(rows: DeploymentTotals[]): string {
  return table(['DEPLOYMENT', 'REQUESTS', 'SUCCESS', 'EXPECTED'], rows.map((r) => {
    const n = r.success + r.failure;
    const expected = EXPECTED_SUCCESS[r.deployment];
    return [r.deployment, String(n), n ? pct(r.success / n) : '-', expected === undefined ? '-' : pct(expected)];
  }));
}
