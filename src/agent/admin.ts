// The agent's admin API: /live, /ready, /status (JSON for `mesh-agent status`), /metrics
// (Prometheus text exposition).
// Read-only endpoints answer on any address; nothing here changes state.
import * as http from 'node:http';
import type { Agent } from './agent.ts';

const json = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x), 2);

export class AdminServer {
  private server: http.Server;
  private agent: Agent;

  constructor(agent: Agent) {
    this.agent = agent;
    this.server = http.createServer((req, res) => this.handle(req, res));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse) {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    switch (path) {
      case '/live':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('live\n');
        return;
      case '/ready': {
        const ok = this.agent.isReady();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'not ready\n');
        return;
      }
      case '/status':
        // The proxy workers' counters as of now, not of their last ping.
        this.agent.collect().then(() => this.agent.status()).then(
          (st) => res.writeHead(200, { 'content-type': 'application/json' }).end(json(st)),
          (e) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting the status failed: ${(e as Error).message}; see the agent log\n`),
        );
        return;
      case '/metrics':
        this.agent.collect().then(() => this.agent.metrics.exposition()).then(
          (body) => res.writeHead(200, { 'content-type': this.agent.metrics.contentType() }).end(body),
          (e) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${(e as Error).message}; see the agent log\n`),
        );
        return;
      default:
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found; try /status, /metrics, /ready, /live\n');
    }
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', (e) => reject(new Error(`admin server on ${host}:${port} failed: ${e.message}; pass --admin with a free address`)));
      this.server.listen(port, host, () => resolve());
    });
  }

  close(): Promise<void> {
    return new Promise((r) => {
      this.server.closeAllConnections();
      this.server.close(() => r());
    });
  }
}
