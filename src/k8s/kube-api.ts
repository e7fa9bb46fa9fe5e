// The calls the agent makes to the API server, list and watch (and a get of its own Node), over node:http(s) with the
// credentials of a kubeconfig or the pod's service account. @kubernetes/client-node does the same
// and much more, and costs ~60 MB of the agent's RSS to load (docs/benchmarks.md, "Memory as
// installed"); it stays for what this does not do (exec and auth-provider plugins, proxies:
// client-node-api.ts), chosen by kubeConfigOf().
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as https from 'node:https';
import * as os from 'node:os';
import * as path from 'node:path';
import { lazyYaml } from './lazy-yaml.ts';
import { nodeHttp } from '../util/builtins.ts';

type Obj = Record<string, any>;

/** What a Reflector needs to watch: client-node's Watch is one. */
export interface WatchClient {
  /**
   * Opens a watch; resolves once the server answered 200 (rejects with `statusCode` otherwise).
   * onEvent per line; onDone once, with the error that ended the stream or null.
   */
  watch(path: string, query: Record<string, string | number | boolean | undefined>, onEvent: (type: string, obj: Obj) => void, onDone: (err: unknown) => void, signal?: AbortSignal): Promise<{ abort(): void }>;
}

/** What KubeSource needs of an API client. */
export interface KubeApi extends WatchClient {
  /** https://host:port, for messages. */
  readonly server: string;
  /** `signal`: abort the request (a stopping reflector), also before the answer came. */
  list(path: string, query: Record<string, string | undefined>, signal?: AbortSignal): Promise<{ items: Obj[]; resourceVersion: string }>;
  /** One object (the agent's own Node); rejects with `statusCode` on a refusal (403, 404). */
  get(path: string, signal?: AbortSignal): Promise<Obj>;
}

/** A kubeconfig's current context reduced to what a TLS client needs. */
export interface LeanConfig {
  server: string;
  ca?: Buffer;
  insecure: boolean;
  tlsServerName?: string;
  cert?: Buffer;
  key?: Buffer;
  /** A bearer token, or the file to read it from at each request (service account tokens rotate). */
  token?: string;
  tokenFile?: string;
  basic?: { username: string; password: string };
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * The agent's config: a kubeconfig file when given; else the pod's service account when
 * KUBERNETES_SERVICE_HOST is set; else $KUBECONFIG or ~/.kube/config. `unsupported` says why the
 * lean client cannot use it (an exec or auth-provider plugin, a proxy): client-node does then.
 */
export function kubeConfigOf(kubeconfig: string | undefined, env: NodeJS.ProcessEnv = process.env): { config: LeanConfig } | { unsupported: string; file?: string } {
  if (!kubeconfig && env.KUBERNETES_SERVICE_HOST) {
    const host = env.KUBERNETES_SERVICE_HOST.includes(':') ? `[${env.KUBERNETES_SERVICE_HOST}]` : env.KUBERNETES_SERVICE_HOST;
    return { config: { server: `https://${host}:${env.KUBERNETES_SERVICE_PORT ?? '443'}`, ca: readIf(path.join(SA_DIR, 'ca.crt')), insecure: false, tokenFile: path.join(SA_DIR, 'token') } };
  }
  const file = kubeconfig ?? (env.KUBECONFIG?.split(path.delimiter).find(Boolean)) ?? path.join(os.homedir(), '.kube', 'config');
  let doc: Obj;
  try {
    const text = fs.readFileSync(file, 'utf8');
    // JSON (what tools and tests often write) needs no YAML parser.
    doc = (/^\s*\{/.test(text) ? tryJson(text) : undefined) ?? lazyYaml().parse(text) ?? {};
  } catch (e) {
    throw new Error(`kubeconfig ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message.split('\n')[0]}; pass --kubeconfig FILE or run in a pod`);
  }
  return leanFromKubeconfig(doc, path.dirname(file), file);
}

/** A kubeconfig document's current context as a LeanConfig, or why it needs client-node. Relative paths are from `dir`. */
export function leanFromKubeconfig(doc: Obj, dir: string, file?: string): { config: LeanConfig } | { unsupported: string; file?: string } {
  const named = (list: unknown, name: unknown, what: string): Obj => {
    const e = Array.isArray(list) ? list.find((x: Obj) => x?.name === name) : undefined;
    if (!e) throw new Error(`kubeconfig${file ? ` ${file}` : ''}: no ${what} named ${JSON.stringify(name)}; check current-context`);
    return e;
  };
  const current = doc['current-context'];
  if (!current) throw new Error(`kubeconfig${file ? ` ${file}` : ''} has no current-context; set one (kubectl config use-context NAME)`);
  const context = named(doc.contexts, current, 'context').context ?? {};
  const cluster = named(doc.clusters, context.cluster, 'cluster').cluster ?? {};
  const user = context.user === undefined ? {} : (named(doc.users, context.user, 'user').user ?? {});
  if (typeof cluster.server !== 'string' || cluster.server === '') throw new Error(`kubeconfig${file ? ` ${file}` : ''}: cluster ${context.cluster} has no server`);
  if (user.exec) return { unsupported: 'an exec credential plugin', file };
  if (user['auth-provider']) return { unsupported: 'an auth-provider plugin', file };
  if (cluster['proxy-url']) return { unsupported: 'a proxy-url', file };
  const data = (d: unknown, f: unknown): Buffer | undefined => (typeof d === 'string' ? Buffer.from(d, 'base64') : typeof f === 'string' ? fs.readFileSync(path.resolve(dir, f)) : undefined);
  const config: LeanConfig = {
    server: cluster.server.replace(/\/+$/, ''),
    ca: data(cluster['certificate-authority-data'], cluster['certificate-authority']),
    insecure: cluster['insecure-skip-tls-verify'] === true,
    tlsServerName: typeof cluster['tls-server-name'] === 'string' ? cluster['tls-server-name'] : undefined,
    cert: data(user['client-certificate-data'], user['client-certificate']),
    key: data(user['client-key-data'], user['client-key']),
    token: typeof user.token === 'string' ? user.token : undefined,
    tokenFile: typeof user.tokenFile === 'string' ? path.resolve(dir, user.tokenFile) : undefined,
    basic: typeof user.username === 'string' ? { username: user.username, password: String(user.password ?? '') } : undefined,
  };
  return { config };
}

function tryJson(text: string): Obj | undefined {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function readIf(f: string): Buffer | undefined {
  try {
    return fs.readFileSync(f);
  } catch {
    return undefined;
  }
}

/** An error as client-node's carry it (statusCode, body), so watch-errors.ts reads both the same way. */
function httpError(what: string, status: number, body: string): Error & { statusCode: number; body: string } {
  let msg = body.slice(0, 300);
  try {
    msg = JSON.parse(body).message ?? msg;
  } catch {
    // not a Status object: the text as it came
  }
  return Object.assign(new Error(`${what}: HTTP ${status}${msg ? `: ${msg}` : ''}`), { statusCode: status, body });
}

const LIST_TIMEOUT_MS = 60_000;
/** A watch event line longer than this is not an object the agent asked for. */
const MAX_LINE = 16 * 1024 * 1024;

export class LeanKubeApi implements KubeApi {
  readonly server: string;
  private readonly c: LeanConfig;
  private readonly url: URL;
  /** node:https, or node:http (loaded only for an http:// server: it costs ~4 MB of RSS), and its keep-alive agent. */
  private client: Promise<{ mod: typeof https | typeof http; agent: http.Agent }>;
  /** A list's whole answer, and a watch's headers, within this (ms). */
  private readonly timeoutMs: number;

  /** `requestTimeoutMs`: default 60 s (tests shorten it). */
  constructor(c: LeanConfig, o: { requestTimeoutMs?: number } = {}) {
    this.c = c;
    this.timeoutMs = o.requestTimeoutMs ?? LIST_TIMEOUT_MS;
    this.server = c.server;
    this.url = new URL(c.server);
    if (this.url.protocol !== 'https:' && this.url.protocol !== 'http:') throw new Error(`API server ${c.server}: only https:// and http:// are supported`);
    this.client = this.url.protocol === 'https:'
      ? Promise.resolve({ mod: https, agent: new https.Agent({ keepAlive: true, ca: c.ca, cert: c.cert, key: c.key, rejectUnauthorized: !c.insecure, servername: c.tlsServerName }) })
      : Promise.resolve(nodeHttp()).then((mod) => ({ mod, agent: new mod.Agent({ keepAlive: true }) }));
  }

  private headers(): http.OutgoingHttpHeaders {
    const h: http.OutgoingHttpHeaders = { accept: 'application/json', 'user-agent': 'mesh-agent' };
    let token = this.c.token;
    if (this.c.tokenFile) token = fs.readFileSync(this.c.tokenFile, 'utf8').trim();
    if (token) h.authorization = `Bearer ${token}`;
    else if (this.c.basic) h.authorization = `Basic ${Buffer.from(`${this.c.basic.username}:${this.c.basic.password}`).toString('base64')}`;
    return h;
  }

  private async request(p: string, query: Record<string, string | number | boolean | undefined>, method = 'GET', headers: http.OutgoingHttpHeaders = {}, signal?: AbortSignal): Promise<http.ClientRequest> {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== '') q.set(k, String(v));
    const base = this.url.pathname.replace(/\/+$/, '');
    const { mod, agent } = await this.client;
    // URL keeps an IPv6 literal's brackets ("[fd00::1]"); node:http looks a bracketed host up as a name (ENOTFOUND).
    const host = this.url.hostname.startsWith('[') ? this.url.hostname.slice(1, -1) : this.url.hostname;
    return mod.request({ host, port: this.url.port || undefined, path: `${base}${p}${q.size ? `?${q}` : ''}`, method, agent, headers: { ...this.headers(), ...headers }, signal });
  }

  /** Sends the request (with `body`) and reads the whole answer, within the request timeout; `what` names it in errors. */
  private exchange(req: http.ClientRequest, what: string, body?: string): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      req.setTimeout(this.timeoutMs, () => req.destroy(Object.assign(new Error(`${what}: no answer within ${this.timeoutMs} ms`), { name: 'TimeoutError' })));
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      });
      req.end(body);
    });
  }

  async list(p: string, query: Record<string, string | undefined>, signal?: AbortSignal): Promise<{ items: Obj[]; resourceVersion: string }> {
    const { status, text } = await this.exchange(await this.request(p, query, 'GET', {}, signal), `list ${p}`);
    if (status !== 200) throw httpError(`list ${p}`, status, text);
    let l: Obj;
    try {
      l = JSON.parse(text);
    } catch (e) {
      throw new Error(`list ${p}: the API server's answer is not JSON: ${(e as Error).message}`);
    }
    return { items: Array.isArray(l?.items) ? l.items : [], resourceVersion: String(l?.metadata?.resourceVersion ?? '') };
  }

  async get(p: string, signal?: AbortSignal): Promise<Obj> {
    const { status, text } = await this.exchange(await this.request(p, {}, 'GET', {}, signal), `get ${p}`);
    if (status !== 200) throw httpError(`get ${p}`, status, text);
    const o = tryJson(text);
    if (o === undefined) throw new Error(`get ${p}: the API server's answer is not JSON`);
    return o;
  }

  /** POST `body` to `p` (a TokenRequest: cni-install); the object the API server answers. */
  async create(p: string, body: object): Promise<Obj> {
    const { status, text } = await this.exchange(await this.request(p, {}, 'POST', { 'content-type': 'application/json' }), `create ${p}`, JSON.stringify(body));
    if (status !== 200 && status !== 201) throw httpError(`create ${p}`, status, text);
    const o = tryJson(text);
    if (o === undefined) throw new Error(`create ${p}: the API server's answer is not JSON`);
    return o;
  }

  async watch(p: string, query: Record<string, string | number | boolean | undefined>, onEvent: (type: string, obj: Obj) => void, onDone: (err: unknown) => void, signal?: AbortSignal): Promise<{ abort(): void }> {
    const req = await this.request(p, { ...query, watch: true }, 'GET', {}, signal);
    return new Promise((resolve, reject) => {
      let done = false;
      let aborted = false;
      const finish = (err: unknown) => {
        if (done) return;
        done = true;
        if (!aborted) onDone(err);
      };
      const handle = { abort: () => {
        aborted = true;
        req.destroy();
      } };
      req.on('error', (e) => {
        if (!done && !aborted) {
          reject(e);
          done = true;
        }
      });
      // An API server that takes the request and never answers: given up, so the reflector retries
      // after its backoff rather than its watchdog, and the request does not stay open forever.
      req.setTimeout(this.timeoutMs, () => req.destroy(Object.assign(new Error(`watch ${p}: no answer within ${this.timeoutMs} ms`), { name: 'TimeoutError' })));
      req.on('response', (res) => {
        if (res.statusCode !== 200) {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (body.length < 4096 ? (body += d) : undefined));
          const refused = () => {
            if (done) return;
            done = true;
            reject(httpError(`watch ${p}`, res.statusCode ?? 0, body));
          };
          res.on('end', refused);
          // Cut short (no 'end'): still refused, else the watch hangs until the reflector's watchdog.
          res.on('close', refused);
          return;
        }
        // The stream is open: its silence is the reflector's watchdog's to judge.
        req.setTimeout(0);
        // From here errors end it through onDone.
        req.removeAllListeners('error');
        req.on('error', finish);
        res.on('error', finish);
        resolve(handle);
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          buf += d;
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i).trim();
            buf = buf.slice(i + 1);
            if (line === '') continue;
            let ev: Obj;
            try {
              ev = JSON.parse(line);
            } catch {
              finish(new Error(`watch ${p}: a line that is not JSON: ${line.slice(0, 200)}`));
              req.destroy();
              return;
            }
            // JSON but not an object (null, a number): reading its type would throw out of this handler and end the agent.
            if (ev === null || typeof ev !== 'object') {
              finish(new Error(`watch ${p}: a line that is not a watch event: ${line.slice(0, 200)}`));
              req.destroy();
              return;
            }
            onEvent(String(ev.type), ev.object);
            if (done || aborted) return;
          }
          if (buf.length > MAX_LINE) {
            finish(new Error(`watch ${p}: an event over ${MAX_LINE} bytes`));
            req.destroy();
          }
        });
        res.on('end', () => finish(null));
        res.on('close', () => finish(null));
      });
      req.end();
    });
  }
}
