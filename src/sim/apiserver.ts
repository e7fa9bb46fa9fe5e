// The stand-in Kubernetes API server: the list and watch protocol over HTTP (or HTTPS, opt-in) for every kind
// in its resource table (src/sim/api-resources.ts). One global resourceVersion; a bounded event
// history per kind (older versions, or all after compact(), get 410 Gone in an ERROR event, as the
// real server answers); bookmarks; label and field selectors, with objects moving in or out of a
// watch's selection seen as ADDED or DELETED, as the real watch cache does; switches to break
// things on purpose. In-process callers read and write objects directly and subscribe to changes.
import { randomBytes, randomUUID } from 'node:crypto';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo, Server } from 'node:net';
import { ACCOUNT_RESOURCES, ApiError, apiVersionOf, CORE_RESOURCES, type AdmitContext, type KubeObject, type ResourceType } from './api-resources.ts';
import { parseFieldSelector, parseLabelSelector, SelectorError, type Selector } from './selectors.ts';
import { ClusterIpAllocator } from './service-ips.ts';
import { SimRbac, type RequestAttributes } from './rbac.ts';
import { API_AUDIENCE, SimTokens } from './tokens.ts';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

/** A change, as subscribers see it; `prev` is the object before a MODIFIED. Objects are frozen. */
export interface ChangeEvent {
  type: EventType;
  object: KubeObject;
  prev?: KubeObject;
}

export interface LoggedRequest {
  at: number;
  method: string;
  /** The plural ("pods", "endpointslices"), or "other" for paths no kind serves. */
  resource: string;
  watch: boolean;
  query: Record<string, string>;
  status: number;
  /** The ServiceAccount of a token this server minted ("system:serviceaccount:NS:NAME"); none for the admin kubeconfig's. */
  user?: string;
}

export interface ListOptions {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

export interface ApiServerOptions {
  /** Where ClusterIPs come from (default 10.96.0.0/16). */
  serviceCidr?: string;
  /** Events kept per kind for watches to resume from (default 10,000); older versions get 410. */
  historyLimit?: number;
  /** Serve HTTPS with this certificate (PEM; one for the address it listens on) instead of HTTP: what in-cluster clients speak, checked against ca.crt. */
  tls?: { certPem: string; keyPem: string };
  /** The server's clock in ms (default Date.now): what tokens are minted, dated and checked against; a test's manual clock makes renewal times exact. */
  now?: () => number;
}

/** Which objects of a kind a list or watch asked for. */
interface Selection {
  type: ResourceType;
  namespace?: string;
  label?: Selector;
  field?: Selector;
}

interface Watcher extends Selection {
  bookmarks: boolean;
  res: http.ServerResponse;
  /** The field selector as the client wrote it (what holdWatchEvents() matches). */
  fieldSelector?: string;
  /** Lines held back (holdWatchEvents), in order; while any is, later lines queue behind it. */
  held: Array<{ line: string; object: KubeObject | null }>;
}

/** Which events a hold keeps from which watches. */
export type WatchHold = (watch: { resource: string; fieldSelector?: string }, object: KubeObject) => boolean;

/** Requests a stall selects, each parked until the release (then answered as usual). */
interface Stall {
  select: (r: LoggedRequest) => boolean;
  parked: Array<() => void>;
  onStall: (r: LoggedRequest) => void;
}

interface Kind {
  type: ResourceType;
  objects: Map<string, KubeObject>;
  history: { rv: number; type: EventType; object: KubeObject; prev?: KubeObject; line: string }[];
  /** Events at or below this version are forgotten. */
  compactedRv: number;
  watchers: Set<Watcher>;
  subscribers: Set<(e: ChangeEvent) => void>;
}

const MAX_LOGGED_REQUESTS = 10_000;
const GENERATE_NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/** A kind's key: its name, and for a named group kubectl's `Kind.group`. */
function kindRef(kind: string, group: string): string {
  return group === '' ? kind : `${kind}.${group}`;
}

function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

/** A continue token this server issued: the first page's resourceVersion and the last key served. */
function parseContinue(token: string): { rv: number; after: string } | undefined {
  try {
    const c = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'));
    return Number.isInteger(c?.rv) && typeof c?.after === 'string' ? { rv: c.rv, after: c.after } : undefined;
  } catch {
    return undefined;
  }
}

function now(): string {
  return new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** The parts of a request path, or undefined if no kind could serve it. */
interface Target {
  kind: Kind;
  namespace?: string;
  name?: string;
  /** "status" for the status subresource. */
  sub?: string;
}

/** TokenRequest's path: the token subresource of a ServiceAccount. */
const TOKEN_PATH = /^\/api\/v1\/namespaces\/([^/]+)\/serviceaccounts\/([^/]+)\/token$/;

export class SimApiServer {
  readonly requests: LoggedRequest[] = [];
  readonly serviceIPs: ClusterIpAllocator;
  /** ServiceAccount tokens it mints and reviews (TokenReview): what a projected token volume holds. */
  readonly tokens = new SimTokens();
  readonly #now: () => number;
  /**
   * What a token this server minted may do (applyAccess(installManifests())): such a request is
   * authenticated (401 when expired or bound to a deleted pod) and authorized (403); any other
   * bearer (the simulated cluster's kubeconfig) is the cluster's admin, as before.
   */
  readonly rbac = new SimRbac();
  readonly #kinds = new Map<string, Kind>(); // by kindRef(): "Pod", "HTTPRoute.gateway.networking.k8s.io"
  readonly #byPath = new Map<string, Kind>(); // by "group/version/plural"
  readonly #historyLimit: number;
  readonly #server: http.Server;
  readonly #scheme: 'http' | 'https';
  readonly #ctx: AdmitContext;
  #rv = 100;
  #failure?: { status: number; on: 'list' | 'watch' | 'any'; plural?: string };
  readonly #holds = new Set<WatchHold>();
  readonly #stalls = new Set<Stall>();
  #url = '';

  constructor(opts: ApiServerOptions = {}) {
    this.serviceIPs = new ClusterIpAllocator(opts.serviceCidr ?? '10.96.0.0/16');
    this.#historyLimit = opts.historyLimit ?? 10_000;
    this.#now = opts.now ?? Date.now;
    const handle = (req: http.IncomingMessage, res: http.ServerResponse) => this.#handle(req, res);
    this.#server = opts.tls ? https.createServer({ cert: opts.tls.certPem, key: opts.tls.keyPem }, handle) : http.createServer(handle);
    this.#scheme = opts.tls ? 'https' : 'http';
    this.#ctx = { allocateClusterIP: (r) => this.serviceIPs.allocate(r), releaseClusterIP: (ip) => this.serviceIPs.release(ip) };
    for (const t of [...CORE_RESOURCES, ...ACCOUNT_RESOURCES]) this.register(t);
    this.register({ group: 'authentication.k8s.io', version: 'v1', kind: 'TokenReview', plural: 'tokenreviews', namespaced: false, review: (o) => this.tokens.review(o, this.#now()) });
  }

  /**
   * Adds a kind (a later issue's HTTPRoute, TrafficSplit, TokenReview...). Two groups may serve
   * one kind name, as a cluster with Gateway API's and Linkerd's HTTPRoute CRDs does.
   */
  register(type: ResourceType): void {
    const ref = kindRef(type.kind, type.group);
    if (this.#kinds.has(ref)) throw new Error(`kind ${ref} is already registered`);
    const k: Kind = { type, objects: new Map(), history: [], compactedRv: this.#rv, watchers: new Set(), subscribers: new Set() };
    this.#kinds.set(ref, k);
    this.#byPath.set(`${type.group}/${type.version}/${type.plural}`, k);
  }

  /** Listens on 127.0.0.1 (or host:port) in this process's network namespace. */
  async start(host = '127.0.0.1', port = 0): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(port, host, () => resolve());
    });
    const a = this.#server.address() as AddressInfo;
    this.#url = `${this.#scheme}://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
    return this;
  }

  /** Serves on a listening socket made elsewhere, e.g. in a cluster's control-plane namespace (listen-in.ts); `url` is the caller's to give (https:// with the tls option). */
  async listenOn(handle: Server, url: string): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen(handle, () => resolve());
    });
    this.#url = url;
    return this;
  }

  get url(): string {
    return this.#url;
  }

  get port(): number {
    return Number(new URL(this.#url).port);
  }

  get resourceVersion(): string {
    return String(this.#rv);
  }

  async close(): Promise<void> {
    this.dropWatches();
    this.#server.closeAllConnections();
    if (this.#server.listening) await new Promise<void>((r) => this.#server.close(() => r()));
  }

  /** Stops accepting connections and leaves open ones alone (a test that its clients close theirs). */
  unlisten(): void {
    this.#server.close();
  }

  /**
   * The objects' ServiceAccounts stored (replaced if there) and their RBAC applied: what the
   * install manifests give tokens, their ServiceAccount for a TokenRequest and the grants for what
   * they may do. Other kinds are left alone (the caller creates what else a test needs).
   */
  applyAccess(objects: readonly any[]): void {
    for (const o of objects) if (o?.kind === 'ServiceAccount') this.apply(o);
    this.rbac.apply(objects);
  }

  // ---- objects -------------------------------------------------------------------------------

  /** A kind by its name when one group serves it, else by kubectl's `Kind.group` ("HTTPRoute.policy.linkerd.io"). */
  #kind(kind: string): Kind {
    const exact = this.#kinds.get(kind);
    if (exact) return exact;
    const named = [...this.#kinds.values()].filter((k) => k.type.kind === kind);
    if (named.length === 1) return named[0]!;
    if (named.length > 1) throw new Error(`kind ${kind} is served by more than one group: name one of ${named.map((k) => kindRef(k.type.kind, k.type.group)).join(', ')}`);
    throw new Error(`the stand-in API server has no kind ${kind}; registered: ${[...this.#kinds.keys()].join(', ')}`);
  }

  /** An object's kind, by its kind and its apiVersion's group. */
  #kindOf(o: KubeObject): Kind {
    const slash = typeof o?.apiVersion === 'string' ? o.apiVersion.lastIndexOf('/') : -1;
    const group = slash < 0 ? '' : o.apiVersion.slice(0, slash);
    const k = this.#kinds.get(kindRef(o?.kind, group)) ?? this.#kind(o?.kind);
    const want = apiVersionOf(k.type);
    if (o.apiVersion !== want) throw new ApiError(400, 'BadRequest', `${o.kind} is served as apiVersion ${want}, not ${o.apiVersion}`);
    return k;
  }

  #prepare(k: Kind, input: KubeObject, old: KubeObject | undefined): KubeObject {
    const o = structuredClone(input) as KubeObject;
    o.metadata ??= { name: '' };
    if (k.type.namespaced) o.metadata.namespace ||= 'default';
    else delete o.metadata.namespace;
    if (!o.metadata.name && o.metadata.generateName && !old) {
      const suffix = [...randomBytes(5)].map((b) => GENERATE_NAME_ALPHABET[b % GENERATE_NAME_ALPHABET.length]).join('');
      o.metadata.name = o.metadata.generateName + suffix;
    }
    if (!o.metadata.name) throw new ApiError(422, 'Invalid', `${o.kind} "" is invalid: metadata.name: Required value: name or generateName is required`);
    o.metadata.uid = old?.metadata.uid ?? o.metadata.uid ?? randomUUID();
    o.metadata.creationTimestamp = old?.metadata.creationTimestamp ?? o.metadata.creationTimestamp ?? now();
    if (k.type.statusSubresource) {
      // Writes of the object itself cannot change .status (that is the subresource's), and only a spec change moves the generation.
      const prevGen = old?.metadata.generation ?? 0;
      o.metadata.generation = old === undefined ? 1 : JSON.stringify(old.spec) === JSON.stringify(o.spec) ? prevGen : prevGen + 1;
      if (old !== undefined) {
        if (old.status === undefined) delete o.status;
        else o.status = structuredClone(old.status);
      }
    }
    k.type.admit?.(o, old, this.#ctx);
    return o;
  }

  /** Creates an object (422 Invalid, 409 AlreadyExists as the real server). Returns it as stored. */
  create(input: KubeObject): KubeObject {
    const k = this.#kindOf(input);
    if (k.type.review) throw new ApiError(405, 'MethodNotAllowed', `${input.kind} is create-only over HTTP (POST); nothing is stored`);
    const ns = k.type.namespaced ? input.metadata?.namespace || 'default' : undefined;
    if (input.metadata?.name && k.objects.has(keyOf(ns, input.metadata.name))) {
      throw new ApiError(409, 'AlreadyExists', `${k.type.plural} "${input.metadata.name}" already exists`);
    }
    const o = this.#prepare(k, input, undefined);
    return this.#store(k, 'ADDED', o, undefined);
  }

  /** Creates, or replaces an existing object of the same kind, namespace and name. */
  apply(input: KubeObject): KubeObject {
    const k = this.#kindOf(input);
    const ns = k.type.namespaced ? input.metadata?.namespace || 'default' : undefined;
    const old = input.metadata?.name ? k.objects.get(keyOf(ns, input.metadata.name)) : undefined;
    if (!old) return this.create(input);
    return this.#store(k, 'MODIFIED', this.#prepare(k, input, old), old);
  }

  /** Changes an object in place: mutate gets a mutable copy. */
  patch(kind: string, namespace: string | undefined, name: string, mutate: (o: KubeObject) => void): KubeObject {
    const k = this.#kind(kind);
    const old = k.objects.get(keyOf(k.type.namespaced ? namespace || 'default' : undefined, name));
    if (!old) throw new ApiError(404, 'NotFound', `${k.type.plural} "${name}" not found`);
    const next = structuredClone(old) as KubeObject;
    mutate(next);
    return this.#store(k, 'MODIFIED', this.#prepare(k, next, old), old);
  }

  /**
   * PUT .../NAME/status: replaces .status only. A resourceVersion in the body must be the stored
   * one (409 Conflict otherwise, as the real server's optimistic concurrency).
   */
  replaceStatus(kind: string, namespace: string | undefined, name: string, body: KubeObject): KubeObject {
    const k = this.#kind(kind);
    if (!k.type.statusSubresource) throw new ApiError(404, 'NotFound', `the server could not find the requested resource (${k.type.plural} has no status subresource)`);
    const old = k.objects.get(keyOf(k.type.namespaced ? namespace || 'default' : undefined, name));
    if (!old) throw new ApiError(404, 'NotFound', `${k.type.plural} "${name}" not found`);
    const rv = body?.metadata?.resourceVersion;
    if (rv !== undefined && rv !== old.metadata.resourceVersion) {
      throw new ApiError(409, 'Conflict', `Operation cannot be fulfilled on ${k.type.plural}.${k.type.group} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    const next = structuredClone(old) as KubeObject;
    next.status = structuredClone(body?.status);
    return this.#store(k, 'MODIFIED', next, old);
  }

  delete(kind: string, namespace: string | undefined, name: string): KubeObject {
    const k = this.#kind(kind);
    const key = keyOf(k.type.namespaced ? namespace || 'default' : undefined, name);
    const old = k.objects.get(key);
    if (!old) throw new ApiError(404, 'NotFound', `${k.type.plural} "${name}" not found`);
    k.objects.delete(key);
    k.type.released?.(old, this.#ctx);
    const gone = structuredClone(old) as KubeObject;
    return this.#emit(k, 'DELETED', gone, undefined);
  }

  get(kind: string, namespace: string | undefined, name: string): KubeObject | undefined {
    const k = this.#kind(kind);
    return k.objects.get(keyOf(k.type.namespaced ? namespace || 'default' : undefined, name));
  }

  /** Stored objects (frozen), filtered like a list request. */
  list(kind: string, opts: ListOptions = {}): KubeObject[] {
    const k = this.#kind(kind);
    const w = this.#selection(k, opts.namespace, opts.labelSelector, opts.fieldSelector);
    return [...k.objects.values()].filter((o) => this.#matches(w, o));
  }

  /** Every change of a kind, synchronously after it is stored; returns the unsubscribe. */
  subscribe(kind: string, fn: (e: ChangeEvent) => void): () => void {
    const k = this.#kind(kind);
    k.subscribers.add(fn);
    return () => k.subscribers.delete(fn);
  }

  #store(k: Kind, type: EventType, o: KubeObject, old: KubeObject | undefined): KubeObject {
    k.objects.set(keyOf(o.metadata.namespace, o.metadata.name), o);
    return this.#emit(k, type, o, old);
  }

  #emit(k: Kind, type: EventType, object: KubeObject, prev: KubeObject | undefined): KubeObject {
    this.#rv++;
    object.metadata.resourceVersion = String(this.#rv);
    deepFreeze(object);
    const line = JSON.stringify({ type, object }) + '\n';
    const ev = { rv: this.#rv, type, object, prev, line };
    k.history.push(ev);
    if (k.history.length > this.#historyLimit) k.compactedRv = k.history.splice(0, k.history.length - this.#historyLimit).at(-1)!.rv;
    for (const w of k.watchers) this.#deliver(w, ev);
    for (const s of k.subscribers) s({ type, object, prev });
    return object;
  }

  /** What a watcher sees of an event: a MODIFIED that moves an object into or out of its selection is an ADDED or a DELETED (with the previous state). */
  #deliver(w: Watcher, ev: Kind['history'][number]): void {
    const now = this.#matches(w, ev.object);
    const before = ev.type === 'MODIFIED' && ev.prev ? this.#matches(w, ev.prev) : now;
    if (now && before) return this.#send(w, ev.line, ev.object);
    if (now) return this.#send(w, JSON.stringify({ type: 'ADDED', object: ev.object }) + '\n', ev.object);
    if (before && ev.prev) {
      const gone = { ...ev.prev, metadata: { ...ev.prev.metadata, resourceVersion: String(ev.rv) } };
      this.#send(w, JSON.stringify({ type: 'DELETED', object: gone }) + '\n', ev.object);
    }
  }

  /** An event's line, unless a hold keeps it back. */
  #send(w: Watcher, line: string, object: KubeObject): void {
    for (const hold of this.#holds) {
      if (hold({ resource: w.type.plural, fieldSelector: w.fieldSelector }, object)) {
        w.held.push({ line, object });
        return;
      }
    }
    this.#write(w, line, object);
  }

  /** Lines behind a held one wait too (a bookmark must not move a watch past what it has not seen). */
  #write(w: Watcher, line: string, object: KubeObject | null = null): void {
    if (w.held.length > 0) w.held.push({ line, object });
    else w.res.write(line);
  }

  // ---- fault switches ------------------------------------------------------------------------

  /** Sends a BOOKMARK with the current resourceVersion to every watch that asked for them. */
  bookmark(): void {
    for (const k of this.#kinds.values()) {
      for (const w of k.watchers) if (w.bookmarks) this.#write(w, this.#bookmarkLine(k.type));
    }
  }

  #bookmarkLine(t: ResourceType, annotations?: Record<string, string>): string {
    return JSON.stringify({ type: 'BOOKMARK', object: { kind: t.kind, apiVersion: apiVersionOf(t), metadata: { resourceVersion: String(this.#rv), ...(annotations ? { annotations } : {}) } } }) + '\n';
  }

  /**
   * Holds back the watch events `hold` selects (and everything after them on the same watch)
   * until the returned release: one watcher learns of a change after the others, as a slow watch
   * cache or a lagging node would. Lists, and watches started afresh, are not held; a watch that
   * ends while holding loses its held lines (its client resumes from before them and they are
   * held again).
   */
  holdWatchEvents(hold: WatchHold): () => void {
    this.#holds.add(hold);
    return () => {
      if (!this.#holds.delete(hold)) return;
      for (const k of this.#kinds.values()) {
        for (const w of k.watchers) {
          const held = w.held;
          w.held = [];
          for (const { line, object } of held) {
            if (object === null) this.#write(w, line);
            else this.#send(w, line, object);
          }
        }
      }
    };
  }

  /**
   * Leaves the requests `select` picks unanswered until `release` (then answers them as usual): a
   * read that hangs, as behind a stuck API server or a dead path to it. `stalled` resolves at the
   * first one parked.
   */
  stallRequests(select: (r: LoggedRequest) => boolean): { stalled: Promise<LoggedRequest>; release: () => void } {
    let onStall!: (r: LoggedRequest) => void;
    const stalled = new Promise<LoggedRequest>((r) => (onStall = r));
    const stall: Stall = { select, parked: [], onStall };
    this.#stalls.add(stall);
    return {
      stalled,
      release: () => {
        if (!this.#stalls.delete(stall)) return;
        for (const go of stall.parked.splice(0)) go();
      },
    };
  }

  /** Destroys open watch connections mid-stream (a load balancer or API server restart). */
  dropWatches(): void {
    for (const k of this.#kinds.values()) {
      for (const w of k.watchers) w.res.socket?.destroy();
      k.watchers.clear();
    }
  }

  /** Forgets all history: a watch from any version before now gets 410 Gone. */
  compact(): void {
    for (const k of this.#kinds.values()) {
      k.history = [];
      k.compactedRv = this.#rv;
    }
  }

  /** Answers requests with this HTTP status (null to heal); only those for `plural` ("namespaces") when given. */
  setFailure(status: number | null, on: 'list' | 'watch' | 'any' = 'any', plural?: string): void {
    this.#failure = status === null ? undefined : { status, on, plural };
  }

  /** Open watches, of one plural ("pods") or all. */
  openWatches(resource?: string): number {
    let n = 0;
    for (const k of this.#kinds.values()) if (!resource || k.type.plural === resource) n += k.watchers.size;
    return n;
  }

  // ---- protocol ------------------------------------------------------------------------------

  #selection(k: Kind, namespace: string | undefined, labelSelector: string | undefined, fieldSelector: string | undefined): Selection {
    const fields = k.type.fields ?? {};
    return {
      type: k.type,
      namespace,
      label: labelSelector ? parseLabelSelector(labelSelector) : undefined,
      field: fieldSelector ? parseFieldSelector(fieldSelector, (p) => p === 'metadata.name' || p === 'metadata.namespace' || p in fields) : undefined,
    };
  }

  #matches(w: Selection, o: KubeObject): boolean {
    if (w.namespace !== undefined && o.metadata.namespace !== w.namespace) return false;
    if (w.label && !w.label((key) => o.metadata.labels?.[key])) return false;
    if (w.field) {
      const fields = w.type.fields ?? {};
      const get = (path: string) => (path === 'metadata.name' ? o.metadata.name : path === 'metadata.namespace' ? o.metadata.namespace : fields[path]?.(o));
      if (!w.field(get)) return false;
    }
    return true;
  }

  /** /api/v1/..., /apis/GROUP/VERSION/...: [namespaces/NS/]PLURAL[/NAME]. */
  #target(pathname: string): Target | undefined {
    const seg = pathname.split('/').filter(Boolean);
    let group: string;
    let version: string;
    let rest: string[];
    if (seg[0] === 'api' && seg.length >= 2) [group, version, rest] = ['', seg[1], seg.slice(2)];
    else if (seg[0] === 'apis' && seg.length >= 3) [group, version, rest] = [seg[1], seg[2], seg.slice(3)];
    else return undefined;
    const find = (plural: string) => this.#byPath.get(`${group}/${version}/${plural}`);
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      const kind = find(rest[2]);
      if (!kind?.type.namespaced || rest.length > 5 || (rest.length === 5 && rest[4] !== 'status')) return undefined;
      return { kind, namespace: rest[1], name: rest[3], sub: rest[4] };
    }
    const kind = find(rest[0]);
    if (!kind || rest.length > 2 || (rest.length === 2 && kind.type.namespaced)) return undefined;
    return { kind, name: rest[1] };
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const u = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(u.searchParams);
    const target = this.#target(u.pathname);
    const watch = query.watch === 'true' || query.watch === '1';
    const entry: LoggedRequest = { at: Date.now(), method: req.method ?? 'GET', resource: target?.kind.type.plural ?? (TOKEN_PATH.test(u.pathname) ? 'serviceaccounts/token' : 'other'), watch, query, status: 200 };
    this.requests.push(entry);
    if (this.requests.length > MAX_LOGGED_REQUESTS) this.requests.splice(0, this.requests.length - MAX_LOGGED_REQUESTS);
    const stall = [...this.#stalls].find((x) => x.select(entry));
    if (stall) {
      stall.parked.push(() => this.#serve(req, res, u, target, entry));
      stall.onStall(entry);
      return;
    }
    this.#serve(req, res, u, target, entry);
  }

  #serve(req: http.IncomingMessage, res: http.ServerResponse, u: URL, target: Target | undefined, entry: LoggedRequest): void {
    const { query, watch } = entry;
    const fail = (status: number, reason: string, message: string) => {
      entry.status = status;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code: status }));
    };
    const tr = TOKEN_PATH.exec(u.pathname);
    const attrs: RequestAttributes | undefined = tr
      ? { verb: req.method === 'POST' ? 'create' : (req.method ?? 'GET').toLowerCase(), group: '', resource: 'serviceaccounts/token', namespace: tr[1], name: tr[2] }
      : target && { verb: req.method === 'POST' ? 'create' : req.method === 'PUT' ? 'update' : target.name !== undefined ? 'get' : watch ? 'watch' : 'list', group: target.kind.type.group, resource: target.kind.type.plural + (target.sub ? `/${target.sub}` : ''), namespace: target.namespace, name: target.name };
    const bearer = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (bearer && attrs && SimTokens.isMinted(bearer)) {
      const a = this.tokens.authenticate(bearer, undefined, this.#now());
      if (!a.authenticated) return fail(401, 'Unauthorized', `Unauthorized: ${a.error}`);
      entry.user = a.user.username;
      const forbidden = this.rbac.check(a.user.username, attrs);
      if (forbidden) return fail(403, 'Forbidden', forbidden);
    }
    if (tr && req.method === 'POST') return this.#tokenRequest(req, res, tr[1]!, tr[2]!, entry, fail);
    if (!target) return fail(404, 'NotFound', `the server could not find the requested resource ${u.pathname}`);
    const t = target.kind.type;
    if (req.method === 'POST' && target.name === undefined) return this.#review(req, res, target, entry, fail);
    if (req.method === 'PUT' && target.sub === 'status' && target.name !== undefined) return this.#putStatus(req, res, target, entry, fail);
    if (req.method !== 'GET' || target.sub !== undefined) return fail(405, 'MethodNotAllowed', `the stand-in API server serves GET (list, watch, get), POST for review kinds and PUT on a status subresource; not ${req.method} on ${t.plural}${target.sub ? `/${target.sub}` : ''}`);
    if (this.#failure && (this.#failure.on === 'any' || (this.#failure.on === 'watch') === watch) && (this.#failure.plural === undefined || this.#failure.plural === t.plural)) {
      const s = this.#failure.status;
      const verb = watch ? 'watch' : 'list';
      if (s === 403) return fail(403, 'Forbidden', `${t.plural} is forbidden: User "system:serviceaccount:mesh:mesh-agent" cannot ${verb} resource "${t.plural}" in API group "${t.group}" at the cluster scope`);
      if (s === 401) return fail(401, 'Unauthorized', 'Unauthorized');
      return fail(s, 'InternalError', `injected failure ${s}`);
    }
    if (target.name !== undefined) {
      const o = target.kind.objects.get(keyOf(target.namespace, target.name));
      if (!o) return fail(404, 'NotFound', `${t.plural} "${target.name}" not found`);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(o));
      return;
    }
    let sel: Selection;
    try {
      sel = this.#selection(target.kind, target.namespace, query.labelSelector, query.fieldSelector);
    } catch (e) {
      if (e instanceof SelectorError) return fail(400, 'BadRequest', e.message);
      throw e;
    }
    if (!watch) {
      // Paged as the real server pages: in key order, `limit` at a time; `continue` carries the
      // first page's resourceVersion and the last key served, and expires (410) once that
      // version is compacted away. Later pages read the current objects, not those at that version.
      let rv = this.#rv;
      let after: string | undefined;
      if (query.continue) {
        const c = parseContinue(query.continue);
        if (!c) return fail(400, 'BadRequest', `continue key is not valid: ${query.continue.slice(0, 100)}`);
        if (c.rv < target.kind.compactedRv) return fail(410, 'Expired', 'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results.');
        ({ rv, after } = c);
      }
      const matching = [...target.kind.objects.entries()].filter(([key, o]) => (after === undefined || key > after) && this.#matches(sel, o)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      const limit = Number(query.limit);
      const page = Number.isInteger(limit) && limit > 0 && matching.length > limit ? matching.slice(0, limit) : matching;
      const cont = page.length < matching.length ? Buffer.from(JSON.stringify({ rv, after: page[page.length - 1]![0] })).toString('base64url') : undefined;
      // Like the real server, list items carry neither kind nor apiVersion.
      const items = page.map(([, { kind: _k, apiVersion: _a, ...rest }]) => rest);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: `${t.kind}List`, apiVersion: apiVersionOf(t), metadata: { resourceVersion: String(rv), ...(cont ? { continue: cont } : {}) }, items }));
      return;
    }
    this.#watch(res, target.kind, sel, query);
  }

  #watch(res: http.ServerResponse, k: Kind, sel: Selection, query: Record<string, string>): void {
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { ...sel, bookmarks: query.allowWatchBookmarks === 'true', res, fieldSelector: query.fieldSelector, held: [] };
    const from = query.resourceVersion;
    if (query.sendInitialEvents === 'true' || from === undefined || from === '' || from === '0') {
      // No starting point: the current state as synthetic ADDED events.
      for (const o of k.objects.values()) if (this.#matches(w, o)) this.#write(w, JSON.stringify({ type: 'ADDED', object: o }) + '\n');
      // Streaming lists (sendInitialEvents) end their initial events with an annotated bookmark.
      if (query.sendInitialEvents === 'true') this.#write(w, this.#bookmarkLine(k.type, { 'k8s.io/initial-events-end': 'true' }));
    } else {
      const n = Number(from);
      if (!Number.isInteger(n) || n < k.compactedRv) {
        this.#write(w, JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${k.compactedRv})`, reason: 'Expired', code: 410 } }) + '\n');
        res.end();
        return;
      }
      for (const ev of k.history) if (ev.rv > n) this.#deliver(w, ev);
    }
    k.watchers.add(w);
    const timeout = Number(query.timeoutSeconds);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      clearTimeout(timer);
      k.watchers.delete(w);
    });
  }

  /** Reads a JSON body and hands it on; a body that is not JSON is a 400. */
  #jsonBody(req: http.IncomingMessage, fail: (s: number, r: string, m: string) => void, then: (o: KubeObject) => void): void {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      let o: KubeObject;
      try {
        o = JSON.parse(body);
      } catch {
        return fail(400, 'BadRequest', `the request body is not JSON: ${body.slice(0, 100)}`);
      }
      then(o);
    });
  }

  #putStatus(req: http.IncomingMessage, res: http.ServerResponse, target: Target, entry: LoggedRequest, fail: (s: number, r: string, m: string) => void): void {
    this.#jsonBody(req, fail, (o) => {
      try {
        const stored = this.replaceStatus(target.kind.type.kind, target.namespace, target.name!, o);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(stored));
      } catch (e) {
        if (e instanceof ApiError) return fail(e.code, e.reason, e.message);
        throw e;
      }
    });
  }

  /**
   * TokenRequest (authentication.k8s.io/v1) as the real server answers it: a token for the
   * ServiceAccount, the audiences asked for (else the API server's), bound to a Pod when
   * boundObjectRef names one, for expirationSeconds (at least 600; default 3600). A ServiceAccount
   * it does not hold is a 404 (applyAccess() stores the install manifests').
   */
  #tokenRequest(req: http.IncomingMessage, res: http.ServerResponse, namespace: string, serviceAccount: string, entry: LoggedRequest, fail: (s: number, r: string, m: string) => void): void {
    this.#jsonBody(req, fail, (o) => {
      if (o?.apiVersion !== 'authentication.k8s.io/v1' || o?.kind !== 'TokenRequest') return fail(400, 'BadRequest', `the body must be an authentication.k8s.io/v1 TokenRequest, not ${o?.apiVersion} ${o?.kind}`);
      if (!this.get('ServiceAccount', namespace, serviceAccount)) return fail(404, 'NotFound', `serviceaccounts "${serviceAccount}" not found`);
      const seconds = o.spec?.expirationSeconds ?? 3600;
      if (!Number.isInteger(seconds) || seconds < 600) return fail(422, 'Invalid', `TokenRequest.authentication.k8s.io "${serviceAccount}" is invalid: spec.expirationSeconds: Invalid value: ${seconds}: may not specify a duration less than 10 minutes`);
      const audiences: string[] = Array.isArray(o.spec?.audiences) && o.spec.audiences.length > 0 ? o.spec.audiences : [API_AUDIENCE];
      const bound = o.spec?.boundObjectRef;
      const now = this.#now();
      const token = this.tokens.mint({ namespace, serviceAccount, audiences, expirationSeconds: seconds, now, ...(bound?.kind === 'Pod' ? { pod: bound.name } : {}) });
      entry.status = 201;
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({
        kind: 'TokenRequest',
        apiVersion: 'authentication.k8s.io/v1',
        metadata: { name: serviceAccount, namespace, creationTimestamp: null },
        spec: { audiences, expirationSeconds: seconds, boundObjectRef: bound ?? null },
        status: { token, expirationTimestamp: new Date(Math.floor(now / 1000) * 1000 + seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z') },
      }));
    });
  }

  #review(req: http.IncomingMessage, res: http.ServerResponse, target: Target, entry: LoggedRequest, fail: (s: number, r: string, m: string) => void): void {
    const review = target.kind.type.review;
    if (!review) return fail(405, 'MethodNotAllowed', `the stand-in API server creates only review kinds over HTTP; ${target.kind.type.plural} are written by the simulated cluster's API`);
    this.#jsonBody(req, fail, (o) => {
      entry.status = 201;
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify(review(o)));
    });
  }
}
