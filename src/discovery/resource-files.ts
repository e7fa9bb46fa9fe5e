// `mesh-agent controller --resources FILE|DIR`: Services, EndpointSlices and Pods (and routes:
// HTTPRoute, GRPCRoute, TrafficSplit, HTTPRouteGroup, to the route index; SMI TrafficTarget and
// TCPRoute, to the access index) from YAML or JSON files (several documents or Lists per file;
// a Namespace's skip-inbound annotations apply to its pods, as with the API server; other kinds
// are accepted and skipped), fed to the discovery hub as the API server's watches would be. A directory means
// its *.yaml, *.yml and *.json files, not its subdirectories (as `kubectl apply -f DIR`).
// Files are reloaded when they change: only a changed file is parsed again, and only its
// objects are diffed. A file that fails to parse keeps its last good objects, and says so.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseDocuments } from '../k8s/documents.ts';
import { groupOf } from '../k8s/kind-store.ts';
import { objectName } from '../k8s/objects.ts';
import { describeObject, kindOf, type ResourceKind } from './from-k8s.ts';
import { joinNamespace, prepare, type DiscoveryHub, type Prepared } from './hub.ts';
import { meshObjectKind, type MeshObjectKind, type MeshObjects } from './mesh-objects.ts';
import { keepNamespace, NamespaceAnnotations } from './namespaces.ts';

type Obj = Record<string, any>;

const RESOURCE_FILE = /\.(ya?ml|json)$/;
/** Editors and ConfigMap volumes write a file in several steps: wait for a quiet moment. */
export const RELOAD_DEBOUNCE_MS = 50;

interface FileState {
  /** dev:ino:size:mtime at the last read, to skip files that did not change. */
  stamp: string;
  /**
   * "kind ns/name" -> the object as the hub takes it (its line, not the object), as last parsed
   * successfully (a pod's without its namespace: joined when published); "route Kind ns/name" ->
   * a route object for the route index; "namespace name" -> a Namespace, cut to what pods read.
   */
  objects: Map<string, Prepared | { route: Obj } | { namespace: Obj }>;
  error: string | null;
}

export interface ResourceFilesState {
  kind: 'files';
  path: string;
  files: number;
  /** Files that failed to parse last time, with why (their last good objects are in use). */
  badFiles: Array<{ file: string; error: string }>;
  reloads: number;
  lastLoadAt: string | null;
  lastError: string | null;
}

const kk = (kind: ResourceKind, key: string) => `${kind} ${key}`;

export class ResourceFiles {
  readonly path: string;
  private readonly hub: DiscoveryHub;
  private readonly onError: (e: Error) => void;
  private files = new Map<string, FileState>();
  /** "kind ns/name" -> the files defining it, in name order: the first one's object is used. */
  private owners = new Map<string, string[]>();
  private watcher?: fs.FSWatcher;
  private timer?: NodeJS.Timeout;
  private isDir = false;
  private reloads = 0;
  private lastLoadAt = 0;
  private lastError: string | null = null;
  /** Duplicates already reported, so each is said once. */
  private saidDuplicate = new Set<string>();
  /** The path's absence (or the directory's) as last said: said once until it changes, not at every event beside it. */
  private saidMissing: string | null = null;

  private readonly routes: MeshObjects | undefined;
  private readonly namespaces: NamespaceAnnotations;

  constructor(p: string, hub: DiscoveryHub, onError: (e: Error) => void, routes?: MeshObjects) {
    this.path = path.resolve(p);
    this.hub = hub;
    this.onError = onError;
    this.routes = routes;
    this.namespaces = new NamespaceAnnotations((msg) => this.fail(msg));
  }

  /** Reads everything (throws on a missing path or a file that does not parse: fix it before starting), hands the hub a synced world, then watches. */
  start(): void {
    let st: fs.Stats;
    try {
      st = fs.statSync(this.path);
    } catch (e) {
      throw new Error(`--resources ${this.path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
    }
    this.isDir = st.isDirectory();
    for (const f of this.list()) {
      const state = this.read(f);
      if (state.error !== null) throw new Error(state.error);
      this.files.set(f, state);
      for (const k of state.objects.keys()) this.own(k, f);
    }
    // Routes are converted once every Service is in: one listed before its Service is not "not found".
    this.routes?.hold();
    this.publishAll(this.owners.keys());
    this.routes?.release();
    this.lastLoadAt = Date.now();
    this.hub.markSynced();
    // Any event in the directory, also for one file: a ConfigMap volume's file is a symlink through
    // ..data, and kubelet's update swaps ..data, never the file's own name. A reload whose file's
    // stamp did not move costs one stat.
    this.watcher = fs.watch(this.isDir ? this.path : path.dirname(this.path), () => this.schedule());
    this.watcher.on('error', (e) => this.fail(`watching ${this.path}: ${e.message}`));
  }

  stop(): void {
    clearTimeout(this.timer);
    this.watcher?.close();
  }

  state(): ResourceFilesState {
    return {
      kind: 'files',
      path: this.path,
      files: this.files.size,
      badFiles: [...this.files].filter(([, s]) => s.error !== null).map(([file, s]) => ({ file, error: s.error! })),
      reloads: this.reloads,
      lastLoadAt: this.lastLoadAt ? new Date(this.lastLoadAt).toISOString() : null,
      lastError: this.lastError,
    };
  }

  private list(): string[] {
    if (!this.isDir) return fs.existsSync(this.path) ? [this.path] : [];
    return fs.readdirSync(this.path).filter((n) => !n.startsWith('.') && RESOURCE_FILE.test(n)).sort().map((n) => path.join(this.path, n))
      .filter((f) => {
        try {
          return fs.statSync(f).isFile();
        } catch {
          return false; // a dangling symlink, or gone since the listing
        }
      });
  }

  private schedule(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.reload(), RELOAD_DEBOUNCE_MS);
  }

  private fail(msg: string): void {
    this.lastError = msg;
    this.onError(new Error(msg));
  }

  /** Every event in the directory reloads: an absence is said when it starts or changes, then stays in lastError. */
  private failMissing(msg: string): void {
    if (msg === this.saidMissing) return;
    this.saidMissing = msg;
    this.fail(msg);
  }

  private stampOf(f: string): string | null {
    try {
      const s = fs.statSync(f);
      return `${s.dev}:${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      return null;
    }
  }

  private read(f: string): FileState {
    const stamp = this.stampOf(f) ?? '';
    let text: string;
    try {
      text = fs.readFileSync(f, 'utf8');
    } catch (e) {
      return { stamp, objects: new Map(), error: `${f}: ${(e as Error).message}` };
    }
    let docs: Obj[];
    try {
      docs = parseDocuments(text, f);
    } catch (e) {
      return { stamp, objects: new Map(), error: (e as Error).message };
    }
    const objects = new Map<string, Prepared | { route: Obj } | { namespace: Obj }>();
    for (const o of docs) {
      if (o?.kind === 'Namespace') {
        objects.set(`namespace ${objectName(o).name}`, { namespace: keepNamespace(o) });
        continue;
      }
      const kind = kindOf(o);
      if (kind !== null) {
        const p = prepare(kind, o);
        objects.set(kk(kind, p.key), p);
        continue;
      }
      const rk = meshObjectKind(o);
      if (rk !== null && this.routes !== undefined) {
        const { namespace, name } = objectName(o);
        // With its group: Gateway API's and Linkerd's HTTPRoute of one name are two objects.
        objects.set(`route ${rk} ${namespace}/${name} ${groupOf(o)}`, { route: o });
      }
    }
    return { stamp, objects, error: null };
  }

  /** Parses again the files whose stamp moved, and the hub hears about the objects they hold or held. */
  private reload(): void {
    let now: Set<string>;
    try {
      now = new Set(this.list());
    } catch (e) {
      // The directory itself is gone or unreadable: that is not "no objects".
      this.failMissing(`--resources ${this.path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; keeping the last good objects`);
      return;
    }
    if (!this.isDir && !now.has(this.path)) {
      // One file given: it being absent is a save in progress or a mistake, never "delete everything".
      this.failMissing(`--resources ${this.path} is missing; keeping its last good objects`);
      return;
    }
    this.saidMissing = null;
    const touched = new Set<string>();
    for (const f of [...this.files.keys()]) {
      if (now.has(f)) continue;
      const gone = this.files.get(f)!;
      this.files.delete(f);
      for (const k of gone.objects.keys()) {
        this.disown(k, f);
        touched.add(k);
      }
    }
    for (const f of now) {
      const prev = this.files.get(f);
      const stamp = this.stampOf(f);
      if (stamp === null || prev?.stamp === stamp) continue;
      const next = this.read(f);
      if (next.error !== null) {
        // Keep the last good objects of this file; say what is wrong with it.
        this.files.set(f, { stamp: next.stamp, objects: prev?.objects ?? new Map(), error: next.error });
        this.fail(`${next.error}; keeping the last good objects of ${path.basename(f)} (${prev?.objects.size ?? 0})`);
        continue;
      }
      this.files.set(f, next);
      for (const k of prev?.objects.keys() ?? []) {
        if (!next.objects.has(k)) {
          this.disown(k, f);
          touched.add(k);
        }
      }
      for (const [k, o] of next.objects) {
        if (prev?.objects.get(k) !== o) touched.add(k);
        this.own(k, f);
      }
    }
    this.routes?.hold();
    this.publishAll(touched);
    this.routes?.release();
    // Cleared only when nothing is wrong any more: a namespace's bad value stays bad across reloads of other files.
    if ([...this.files.values()].every((s) => s.error === null)) this.lastError = this.namespaces.problem();
    this.reloads++;
    this.lastLoadAt = Date.now();
  }

  private own(k: string, f: string): void {
    const list = this.owners.get(k);
    if (list === undefined) this.owners.set(k, [f]);
    else if (!list.includes(f)) {
      list.push(f);
      list.sort();
    }
  }

  private disown(k: string, f: string): void {
    const list = this.owners.get(k);
    if (list === undefined) return;
    const i = list.indexOf(f);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.owners.delete(k);
  }

  /**
   * Namespaces first: a pod is joined with its namespace as it is now, and the pods of a
   * namespace whose annotations changed go again.
   */
  private publishAll(keys: Iterable<string>): void {
    const rest = new Set<string>();
    const changed = new Set<string>();
    for (const k of keys) {
      if (!k.startsWith('namespace ')) rest.add(k);
      else if (this.publishNamespace(k)) changed.add(k.slice('namespace '.length));
    }
    if (changed.size > 0) for (const k of this.owners.keys()) if (k.startsWith('pod ') && changed.has(k.slice(4, k.indexOf('/')))) rest.add(k);
    for (const k of rest) this.publish(k, this.owners.get(k) ?? []);
  }

  /** The first file's Namespace (none: gone); true when what its pods read of it changed. */
  private publishNamespace(k: string): boolean {
    const owners = this.owners.get(k) ?? [];
    if (owners.length === 0) return this.namespaces.delete(k.slice('namespace '.length));
    return this.namespaces.set((this.files.get(owners[0]!)!.objects.get(k) as { namespace: Obj }).namespace);
  }

  /** The object of the first file defining it goes to the hub (none: removed). */
  private publish(k: string, owners: string[]): void {
    if (k.startsWith('route ')) {
      const [, rk, key, group] = k.split(' ') as [string, string, string, string];
      const [ns, name] = key.split('/') as [string, string];
      if (owners.length === 0) this.routes!.remove(rk as MeshObjectKind, ns, name, group);
      else this.routes!.upsert((this.files.get(owners[0]!)!.objects.get(k) as { route: Obj }).route);
      return;
    }
    const sp = k.indexOf(' ');
    const kind = k.slice(0, sp) as ResourceKind;
    const key = k.slice(sp + 1);
    if (owners.length === 0) {
      this.hub.remove(kind, key);
      return;
    }
    if (owners.length > 1) {
      const said = `${k} ${owners.join()}`;
      if (!this.saidDuplicate.has(said)) {
        this.saidDuplicate.add(said);
        this.fail(`${describeObject(kind, key)} is defined in ${owners.map((f) => path.basename(f)).join(' and ')}; using ${path.basename(owners[0]!)}'s`);
      }
    }
    const p = this.files.get(owners[0]!)!.objects.get(k) as Prepared;
    // Kept without its namespace: a namespace that sets nothing leaves it as it is.
    const ns = kind === 'pod' ? this.namespaces.get(key.slice(0, key.indexOf('/'))) : undefined;
    this.hub.put(kind, ns === undefined ? p : joinNamespace(p, ns));
  }
}
