// The agent's admin API: /live, /ready, /status (JSON for `mesh-agent status`), /metrics
// (Prometheus text exposition).
// Read-only endpoints answer on any address; nothing here changes state.
import type { Agent } from './agent.ts';
import { AdminHttpServer, type AdminResponse } from './admin-http.ts';

const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x), 2);
const text = (status: number, body: string): AdminResponse => ({ status, headers: { 'content-type': 'text/plain' }, body });

export class AdminServer {
  private server: AdminHttpServer;
  private agent: Agent;

  constructor(agent: Agent) {
    this.agent = agent;
    this.server = new AdminHttpServer((method, path) => this.handle(method, path));
  }

  private async handle(_method: string, path: string): Promise<AdminResponse> {
    switch (path) {
      case '/live':
        return text(200, 'live\n');
      case '/ready': {
        const ok = this.agent.isReady();
        return text(ok ? 200 : 503, ok ? 'ready\n' : 'not ready\n');
      }
      case '/status':
        try {
          // The proxy workers' counters as of now, not of their last ping.
          await this.agent.collect();
          return { status: 200, headers: { 'content-type': 'application/json' }, body: json(this.agent.status()) };
        } catch (e) {
          return text(500, `collecting the status failed: ${(e as Error).message}; see the agent log\n`);
        }
      case '/metrics':
        try {
          await this.agent.collect();
          return { status: 200, headers: { 'content-type': this.agent.metrics.contentType() }, body: await this.agent.metrics.exposition() };
        } catch (e) {
          return text(500, `collecting metrics failed: ${(e as Error).message}; see the agent log\n`);
        }
      default:
        return text(404, 'not found; try /status, /metrics, /ready, /live\n');
    }
  }

  async listen(host: string, port: number): Promise<void> {
    try {
      await this.server.listen(host, port);
    } catch (e) {
      throw new Error(`admin server on ${host}:${port} failed: ${(e as Error).message}; pass --admin with a free address`);
    }
  }

  close(): Promise<void> {
    return this.server.close();
  }
}
