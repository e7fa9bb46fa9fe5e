// The agent's end of the CNI plugin (docs/install.md, "The CNI plugin"): HTTP on a unix socket of
// the node (a hostPath the plugin reaches), answering the plugin's ADD and DEL.
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import { ADMIT_PATH, MAX_MESSAGE_BYTES as MAX_BODY, MessageReader, parseAdmitRequest, RELEASE_PATH, type AdmitAnswer, type AdmitRequest } from '../cni/protocol.ts';
import { DEFAULT_AGENT_SOCKET } from '../cni/spec.ts';
import { nodeHttp } from '../util/builtins.ts';

/** What a stopping agent answers the ADDs it has not decided: the plugin then goes by the state file (a pod of a meshed namespace fails "try again later", and the runtime retries against the next agent). */
const STOPPING: AdmitAnswer = { result: 'retry', meshed: null, message: 'the agent is stopping; the next agent on the node decides' };

export interface CniHandlers {
  admit(req: AdmitRequest): Promise<AdmitAnswer>;
  release(req: AdmitRequest): void;
  onError(msg: string): void;
}

export class CniServer {
  readonly #socket: string;
  readonly #h: CniHandlers;
  readonly #server: http.Server;
  /** The undecided ADDs' answers, each answering its plugin once; resolved when the answer is written. */
  readonly #pending = new Set<(a: AdmitAnswer) => Promise<void>>();
  #closing = false;

  constructor(socket: string, h: CniHandlers) {
    this.#socket = socket;
    this.#h = h;
    this.#server = nodeHttp().createServer((req, res) => this.#serve(req, res));
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
    const body = new MessageReader();
    req.on('data', (d: Buffer) => {
      if (body.add(d)) return;
      answer(413, { error: `request over ${MAX_BODY} bytes` });
      req.destroy();
    });
    req.on('end', () => {
      let parsed: AdmitRequest;
      try {
        parsed = parseAdmitRequest(body.text());
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
      if (this.#closing) return answer(200, STOPPING);
      const written = new Promise<void>((resolve) => {
        res.once('finish', resolve);
        res.once('close', resolve);
      });
      const reply = (a: AdmitAnswer) => {
        this.#pending.delete(reply);
        answer(200, a);
        return written;
      };
      this.#pending.add(reply);
      this.#h.admit(parsed).then(reply, (e) => reply({ result: 'retry', meshed: null, message: (e as Error).message }));
    });
    req.on('error', () => {});
  }

  /**
   * Stops answering: plugins run from now on decide from the state file. Every ADD still being
   * decided is answered "retry" now, so its plugin hears why, without waiting for the admission:
   * one reading its pod from the API server could hold the agent's stop for the read's timeout
   * (60 s). An admission that returns later answers nobody.
   */
  async close(): Promise<void> {
    this.#closing = true;
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    // Written before the connections are cut: a plugin hears "retry", not a reset.
    await Promise.all([...this.#pending].map((reply) => reply(STOPPING)));
    this.#server.closeAllConnections();
    await closed;
    fs.rmSync(this.#socket, { force: true });
  }
}
