// A stand-in Kubernetes API server for tests: the list and watch protocol of core/v1 pods and
// namespaces, over plain HTTP on 127.0.0.1. One global resourceVersion counter, a bounded event
// history (compact() forgets it, so a watch from an older version gets 410 Gone in an ERROR
// event, as the real server answers), bookmarks, and switches to break things on purpose.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';

type Obj = Record<string, any>;
type Resource = 'pods' | 'namespaces';
type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface LoggedRequest {
  at: number;
  method: string;
  resource: Resource | 'other';
  watch: boolean;
  query: Record<string, string>;
  status: number;
}

interface Watcher {
  resource: Resource;
  nodeName?: string;
  bookmarks: boolean;
  res: http.ServerResponse;
}

export interface PodSpec {
  name: string;
  uid?: string;
  namespace?: string;
  nodeName?: string;
  ip?: string;
  annotations?: Record<string, string>;
  labels?: Record<string, string>;
}

export class FakeApiServer {
  readonly requests: LoggedRequest[] = [];
  private server = http.createServer((req, res) => this.handle(req, res));
  private rv = 100;
  private pods = new Map<string, Obj>();
  private namespaces = new Map<string, Obj>();
  private history: { rv: number; resource: Resource; type: EventType; object: Obj }[] = [];
  /** Events at or below this version are forgotten. */
  private compactedRv = 100;
  private watchers = new Set<Watcher>();
  private failure?: { status: number; on: 'list' | 'watch' | 'any' };
  private uidSeq = 0;
  port = 0;

  async start(): Promise<this> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get resourceVersion() {
    return String(this.rv);
  }

  async close() {
    this.dropWatches();
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }

  // ---- objects -------------------------------------------------------------------------------

  addPod(p: PodSpec): Obj {
    const ns = p.namespace ?? 'default';
    const o: Obj = {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: p.name, namespace: ns, uid: p.uid ?? `uid-${p.name}-${++this.uidSeq}`, labels: p.labels ?? {}, annotations: p.annotations ?? {} },
      spec: { nodeName: p.nodeName, containers: [{ name: 'app', image: 'app' }] },
      status: { phase: 'Running', podIP: p.ip, qosClass: 'BestEffort' },
    };
    this.pods.set(`${ns}/${p.name}`, o);
    this.emit('pods', 'ADDED', o);
    return o;
  }

  updatePod(namespace: string, name: string, mutate: (o: Obj) => void): Obj {
    const o = this.pods.get(`${namespace}/${name}`);
    if (!o) throw new Error(`no pod ${namespace}/${name}`);
    const next = structuredClone(o);
    mutate(next);
    this.pods.set(`${namespace}/${name}`, next);
    this.emit('pods', 'MODIFIED', next);
    return next;
  }

  deletePod(namespace: string, name: string) {
    const o = this.pods.get(`${namespace}/${name}`);
    if (!o) throw new Error(`no pod ${namespace}/${name}`);
    this.pods.delete(`${namespace}/${name}`);
    this.emit('pods', 'DELETED', structuredClone(o));
  }

  addNamespace(name: string, annotations: Record<string, string> = {}): Obj {
    const o: Obj = { apiVersion: 'v1', kind: 'Namespace', metadata: { name, uid: `uid-ns-${name}-${++this.uidSeq}`, annotations }, status: { phase: 'Active' } };
    this.namespaces.set(name, o);
    this.emit('namespaces', 'ADDED', o);
    return o;
  }

  updateNamespace(name: string, mutate: (o: Obj) => void) {
    const o = this.namespaces.get(name);
    if (!o) throw new Error(`no namespace ${name}`);
    const next = structuredClone(o);
    mutate(next);
    this.namespaces.set(name, next);
    this.emit('namespaces', 'MODIFIED', next);
  }

  deleteNamespace(name: string) {
    const o = this.namespaces.get(name);
    if (!o) throw new Error(`no namespace ${name}`);
    this.namespaces.delete(name);
    this.emit('namespaces', 'DELETED', structuredClone(o));
  }

  // ---- fault switches ------------------------------------------------------------------------

  /** Sends a BOOKMARK with the current resourceVersion to every watch that asked for them. */
  bookmark() {
    for (const w of this.watchers) {
      if (w.bookmarks) this.write(w, { type: 'BOOKMARK', object: { kind: w.resource === 'pods' ? 'Pod' : 'Namespace', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) } } });
    }
  }

  /** Destroys open watch connections mid-stream (a load balancer or apiserver restart). */
  dropWatches() {
    for (const w of this.watchers) w.res.socket?.destroy();
    this.watchers.clear();
  }

  /** Forgets all history: a watch from any version before now gets 410 Gone. */
  compact() {
    this.history = [];
    this.compactedRv = this.rv;
  }

  /** Answers requests with this HTTP status (null to heal). */
  setFailure(status: number | null, on: 'list' | 'watch' | 'any' = 'any') {
    this.failure = status === null ? undefined : { status, on };
  }

  openWatches(resource?: Resource) {
    return [...this.watchers].filter((w) => !resource || w.resource === resource).length;
  }

  // ---- protocol ------------------------------------------------------------------------------

  private emit(resource: Resource, type: EventType, object: Obj) {
    this.rv++;
    object.metadata.resourceVersion = String(this.rv);
    const ev = { rv: this.rv, resource, type, object: structuredClone(object) };
    this.history.push(ev);
    for (const w of this.watchers) if (w.resource === resource && this.matches(w.nodeName, ev.object)) this.write(w, { type, object: ev.object });
  }

  private matches(nodeName: string | undefined, o: Obj) {
    return nodeName === undefined || o.spec?.nodeName === nodeName;
  }

  private write(w: Watcher, ev: Obj) {
    w.res.write(JSON.stringify(ev) + '\n');
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse) {
    const u = new URL(req.url ?? '/', 'http://x');
    const query = Object.fromEntries(u.searchParams);
    const resource: Resource | 'other' = u.pathname === '/api/v1/pods' ? 'pods' : u.pathname === '/api/v1/namespaces' ? 'namespaces' : 'other';
    const watch = query.watch === 'true' || query.watch === '1';
    const entry: LoggedRequest = { at: Date.now(), method: req.method ?? 'GET', resource, watch, query, status: 200 };
    this.requests.push(entry);
    const fail = (status: number, reason: string, message: string) => {
      entry.status = status;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code: status }));
    };
    if (resource === 'other' || req.method !== 'GET') return fail(404, 'NotFound', `the server could not find the requested resource ${u.pathname}`);
    if (this.failure && (this.failure.on === 'any' || (this.failure.on === 'watch') === watch)) {
      const s = this.failure.status;
      const verb = watch ? 'watch' : 'list';
      if (s === 403) return fail(403, 'Forbidden', `${resource} is forbidden: User "system:serviceaccount:mesh:mesh-agent" cannot ${verb} resource "${resource}" in API group "" at the cluster scope`);
      if (s === 401) return fail(401, 'Unauthorized', 'Unauthorized');
      return fail(s, 'InternalError', `injected failure ${s}`);
    }
    let nodeName: string | undefined;
    const fs = query.fieldSelector;
    if (fs) {
      const m = /^spec\.nodeName=(.*)$/.exec(fs);
      if (!m || resource !== 'pods') return fail(400, 'BadRequest', `field label not supported: ${fs}`);
      nodeName = m[1];
    }
    const store = resource === 'pods' ? this.pods : this.namespaces;
    if (!watch) {
      // Like the real server, list items carry neither kind nor apiVersion.
      const items = [...store.values()].filter((o) => this.matches(nodeName, o)).map((o) => {
        const { kind: _k, apiVersion: _a, ...rest } = structuredClone(o);
        return rest;
      });
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: resource === 'pods' ? 'PodList' : 'NamespaceList', apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) }, items }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { resource, nodeName, bookmarks: query.allowWatchBookmarks === 'true', res };
    const from = query.resourceVersion;
    if (from === undefined || from === '' || from === '0') {
      // No starting point: the current state as synthetic ADDED events.
      for (const o of store.values()) if (this.matches(nodeName, o)) this.write(w, { type: 'ADDED', object: o });
    } else {
      const n = Number(from);
      if (!Number.isInteger(n) || n < this.compactedRv) {
        this.write(w, { type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: `too old resource version: ${from} (${this.compactedRv})`, reason: 'Expired', code: 410 } });
        res.end();
        return;
      }
      for (const ev of this.history) if (ev.resource === resource && ev.rv > n && this.matches(nodeName, ev.object)) this.write(w, { type: ev.type, object: ev.object });
    }
    this.watchers.add(w);
    const timeout = Number(query.timeoutSeconds);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      clearTimeout(timer);
      this.watchers.delete(w);
    });
  }
}

