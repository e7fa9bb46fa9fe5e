// The agent's end of the CNI plugin (docs/install.md, "The CNI plugin"): HTTP on a unix socket of
// the node (a hostPath the plugin reaches), answering the plugin's ADD and DEL.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { ADMIT_PATH, parseAdmitRequest, RELEASE_PATH, type AdmitAnswer, type AdmitRequest } from '../cni/protocol.ts';
import { DEFAULT_AGENT_SOCKET } from '../cni/spec.ts';

const MAX_BODY = 16 * 1024;

export interface CniHandlers {
  admit(req: AdmitRequest): Promise<AdmitAnswer>;
  release(req: AdmitRequest): void;
  onError(msg: string): void;
}

export class CniServer {
  readonly #socket: string;
  readonly #h: CniHandlers;
  readonly #server: http.Server;
  readonly #inFlight = new Set<Promise<unknown>>();

  constructor(socket: string, h: CniHandlers) {
    this.#socket = socket;
    this.#h = h;
    this.#server = http.createServer((req, res) => this.#serve(req, res));
  }

  async listen(): Promise<void> {
    fs.mkdirSync(path.dirname(this.#socket), { recursive: true });
    // A killed agent leaves its socket file; a second agent on the node failed on the proxy port before this.
    fs.rmSync(this.#socket, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(this.#socket, () => {
        this.#server.off('error', reject);
        resolve();
      });
    }).catch((e) => {
      throw new Error(`CNI socket ${this.#socket}: ${(e as Error).message}; the DaemonSet mounts its directory from the host (hostPath ${path.dirname(DEFAULT_AGENT_SOCKET)}), or pass another path with --cni-socket`);
    });
    fs.chmodSync(this.#socket, 0o600);
  }

  #serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const answer = (status: number, body: unknown) => {
      if (res.headersSent || res.destroyed) return;
      const data = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
      res.end(data);
    };
    if (req.method !== 'POST' || (req.url !== ADMIT_PATH && req.url !== RELEASE_PATH)) {
      answer(404, { error: `${req.method} ${req.url}: the CNI socket answers POST ${ADMIT_PATH} and ${RELEASE_PATH}` });
      return;
    }
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      body += d;
      if (body.length > MAX_BODY) {
        answer(413, { error: `request over ${MAX_BODY} bytes` });
        req.destroy();
      }
    });
    req.on('end', () => {
      let parsed: AdmitRequest;
      try {
        parsed = parseAdmitRequest(body);
      } catch (e) {
        this.#h.onError(`CNI plugin request refused: ${(e as Error).message}`);
        answer(400, { error: (e as Error).message });
        return;
      }
      if (req.url === RELEASE_PATH) {
        this.#h.release(parsed);
        answer(200, { released: true });
        return;
      }
      const p = this.#h.admit(parsed).then((a) => answer(200, a), (e) => answer(200, { result: 'retry', meshed: null, message: (e as Error).message } satisfies AdmitAnswer));
      this.#inFlight.add(p);
      void p.finally(() => this.#inFlight.delete(p));
    });
    req.on('error', () => {});
  }

  /**
   * Stops answering: plugins run from now on decide from the state file. The caller has made
   * pending admissions return first (they answer "retry"), so each plugin waiting hears why.
   */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all([...this.#inFlight]);
    this.#server.closeAllConnections();
    await closed;
    fs.rmSync(this.#socket, { force: true });
  }
}
