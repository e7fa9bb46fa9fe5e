// The agent's admin API on a simulated node: it listens inside the node's network namespace,
// so the tests read it with curl run there.
import type { SimNode } from '../../src/sim/index.ts';

export const ADMIN = 'http://127.0.0.1:4191';

/** Waits up to ~15 s for /ready; the error carries the agent's log tail. */
export async function waitAgentReady(node: SimNode, agentLog: () => string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await node.execInNode('curl', ['-sf', `${ADMIN}/ready`]);
    if (r.code === 0) return;
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`agent not ready: ${agentLog().slice(-2000)}`);
}

/** The agent's /status as JSON. */
export async function agentStatus(node: SimNode): Promise<any> {
  return JSON.parse((await node.execInNode('curl', ['-sf', `${ADMIN}/status`])).stdout);
}
