// The controller's discovery state and its streams to the agents (DESIGN.md, "Discovery").
// One source (the API server's watches or --resources files) feeds Kubernetes objects in; the
// hub keeps one record line per object, serialized once per change, and sends each agent
// reset + the whole world + synced, then only what changed. An object whose record did not
// change (a Pod status update that keeps its IP) sends nothing.
//
// Memory stays bounded however the agents read: a new agent is sent a snapshot built once and
// shared by every agent that connects within SNAPSHOT_REUSE_MS (changes made since are sent
// after it, by key, so nothing queues per agent while it reads; changes made once those are
// listed queue behind them), each stream is handed one chunk at a time (write() then 'drain'),
// and the deltas queued for an agent that does not keep up are bounded: past maxQueuedBytes its
// stream is closed (it reconnects and resyncs) and counted as closedSlow. So is an agent that
// reads nothing of its snapshot for snapshotStallMs: it would keep that snapshot (the whole world,
// not shared with later agents once the world changed) for as long as its connection lives.
import type { Writable } from 'node:stream';
import { convert, describeObject, skipInboundOf, type ResourceKind } from './from-k8s.ts';
import { addressingOf, DISCOVERY_VERSION, type Addressing, type DiscoPod, type DiscoService, type DiscoSlice } from './model.ts';

type Obj = Record<string, any>;

/**
 * What the hub streams: the discovery kinds, route records (made by routing/route-index.ts) and
 * access records (made by policy/access-index.ts), not by prepare().
 */
export type HubKind = ResourceKind | 'route' | 'access';
export const KINDS: readonly HubKind[] = ['service', 'slice', 'pod', 'route', 'access'];

export const RESET_LINE = JSON.stringify({ type: 'reset', version: DISCOVERY_VERSION });
export const SYNCED_LINE = JSON.stringify({ type: 'synced' });

export interface HubOptions {
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
  /** Deltas queued for one live agent beyond what its stream accepted; past this it is closed. Default 8 MiB. */
  maxQueuedBytes?: number;
  /** Snapshot chunk size. Default 64 KiB. */
  chunkBytes?: number;
  /** A snapshot is reused for agents connecting within this long of its build. Default 10 s. */
  snapshotReuseMs?: number;
  /** An agent whose stream takes nothing of its snapshot (or its tail) for this long is closed. Default 60 s. */
  snapshotStallMs?: number;
  now?: () => number;
}

/**
 * An object made ready for the hub: its key, its whole "set" line (without the newline; null:
 * nothing to send, remove any earlier one), its endpoints (slices, for the counts) and what was
 * wrong with it. Sources keep these rather than objects: the line is the very string the hub
 * keeps and sends, so a source's copy of the world costs little more than the hub's.
 */
export interface Prepared {
  key: string;
  line: string | null;
  endpoints: number;
  problems: string[];
  /** A Service's ports (what a route may name). */
  ports?: number[];
  /** A Service's addressing (whether a route backend naming it can be balanced). */
  addressing?: Addressing;
  /** A pod whose record follows its namespace's annotations (podFromK8s): joined again when they change. */
  followsNamespace?: true;
}

type Entry = Prepared & { line: string };

const NO_PROBLEMS: string[] = [];

/** `namespace`: the annotations of the object's namespace (what a pod's record reads of them). */
export function prepare(kind: ResourceKind, obj: Obj, namespace?: Record<string, string>): Prepared {
  const c = convert(kind, obj, namespace);
  const p: Prepared = {
    key: c.key,
    line: c.record === null ? null : setLine(kind, c.record),
    endpoints: kind === 'slice' && c.record !== null ? (c.record as DiscoSlice).endpoints.length : 0,
    problems: c.problems.length > 0 ? c.problems : NO_PROBLEMS,
  };
  if (kind === 'service' && c.record !== null) {
    p.ports = (c.record as DiscoService).ports.map((x) => x.port);
    p.addressing = addressingOf(c.record as DiscoService);
  }
  if (c.followsNamespace && p.line !== null) p.followsNamespace = true;
  return p;
}

/**
 * A pod that follows its namespace (followsNamespace), under the namespace's annotations as they
 * are now: its skip-inbound ports are the namespace's. The sources keep lines, not pods, so the
 * record is read back from its line; the rest of it does not depend on the namespace.
 */
export function joinNamespace(p: Prepared, namespace: Record<string, string> | undefined): Prepared {
  if (!p.followsNamespace || p.line === null) return p;
  const pod = (JSON.parse(p.line) as { pod: DiscoPod }).pod;
  delete pod.skipInbound;
  skipInboundOf(pod, undefined, namespace, []);
  const line = setLine('pod', pod);
  return line === p.line ? p : { ...p, line };
}

/** The world as one run of chunks, shared by the agents reading it, and what changed since it was built. */
interface Snapshot {
  chunks: Buffer[];
  bytes: number;
  builtAt: number;
  changed: Record<HubKind, Set<string>>;
  readers: number;
}

type Phase = 'waiting' | 'snapshot' | 'live' | 'closed';

interface Subscriber {
  node: string;
  agentId: string;
  since: number;
  out: Writable;
  close: (why: string, slow: boolean) => void;
  phase: Phase;
  snap?: Snapshot;
  next: number;
  /** Lines that complete a snapshot (changes since it was built, then synced), built when its chunks are out. */
  tail?: string[];
  tailAt: number;
  queue: Buffer[];
  queuedBytes: number;
  draining: boolean;
  /** Armed while a snapshot-phase stream waits for 'drain' (snapshotStallMs). */
  stall?: NodeJS.Timeout;
  sentBytes: number;
  syncedAt: number;
}

const emptyChanged = (): Record<HubKind, Set<string>> => ({ service: new Set(), slice: new Set(), pod: new Set(), route: new Set(), access: new Set() });

export function deleteLine(kind: HubKind, key: string): string {
  return JSON.stringify({ type: kind, op: 'delete', key });
}

function setLine(kind: ResourceKind, record: DiscoService | DiscoSlice | DiscoPod): string {
  return JSON.stringify({ type: kind, op: 'set', [kind]: record });
}

export interface HubState {
  synced: boolean;
  services: number;
  slices: number;
  endpoints: number;
  pods: number;
  routes: number;
  /** TrafficTargets streamed (access records). */
  access: number;
  /** Objects whose last version had something left out. */
  objectsWithProblems: number;
  agents: number;
  agentsLive: number;
  /** Streams closed because the agent did not read its deltas in time. */
  closedSlow: number;
  snapshotsBuilt: number;
  lastSnapshotBytes: number;
  /** Lines sent as deltas (each once, whatever the number of agents). */
  deltas: number;
  /** Object updates that left their record unchanged, so sent nothing. */
  unchanged: number;
  recentProblems: Array<{ at: string; msg: string }>;
}

export class DiscoveryHub {
  private readonly o: Required<Omit<HubOptions, 'log'>> & Pick<HubOptions, 'log'>;
  private readonly maps: Record<HubKind, Map<string, Entry>> = { service: new Map(), slice: new Map(), pod: new Map(), route: new Map(), access: new Map() };
  private endpoints = 0;
  /** kind/key -> the problems last logged for it, so each is logged once until it changes. */
  private problems = new Map<string, string>();
  private recentProblems: Array<{ at: string; msg: string }> = [];
  private subs = new Set<Subscriber>();
  private current?: Snapshot;
  /** Snapshots still being read (the current one included): every change is noted in each. */
  private reading = new Set<Snapshot>();
  /** This turn's delta lines, sent together on setImmediate. */
  private pending: string[] = [];
  private flushScheduled = false;
  private syncedV = false;
  private readonly waiters: Array<() => void> = [];
  private stats = { closedSlow: 0, snapshotsBuilt: 0, lastSnapshotBytes: 0, deltas: 0, unchanged: 0 };
  /** Hears each Service's ports and addressing as they change (ports null: gone), for the route index (routing/route-index.ts). */
  onService: ((key: string, ports: number[] | null, addressing: Addressing) => void) | null = null;

  constructor(o: HubOptions) {
    this.o = { maxQueuedBytes: 8 << 20, chunkBytes: 64 << 10, snapshotReuseMs: 10_000, snapshotStallMs: 60_000, now: Date.now, ...o };
  }

  get synced(): boolean {
    return this.syncedV;
  }

  /** Resolves once the source has delivered a whole world. */
  whenSynced(): Promise<void> {
    return this.syncedV ? Promise.resolve() : new Promise((r) => this.waiters.push(r));
  }

  // ---- the source's side --------------------------------------------------------------------

  /** An object added or changed. Its problems are logged once (again only when they change). */
  upsert(kind: ResourceKind, obj: Obj): void {
    this.put(kind, prepare(kind, obj));
  }

  /** A prepared object added or changed (see prepare). */
  put(kind: HubKind, p: Prepared): void {
    this.noteProblems(kind, p.key, p.problems);
    if (p.line === null) this.dropRecord(kind, p.key);
    else this.set(kind, p as Entry);
  }

  /** An object deleted: its record goes, and whatever was wrong with it is forgotten. */
  remove(kind: HubKind, key: string): void {
    this.problems.delete(`${kind} ${key}`);
    this.dropRecord(kind, key);
  }

  /** The record goes (the object is gone, or no longer anything discovery sends). */
  private dropRecord(kind: HubKind, key: string): void {
    const m = this.maps[kind];
    const prev = m.get(key);
    if (prev === undefined) return;
    m.delete(key);
    this.endpoints -= prev.endpoints;
    if (kind === 'service') this.onService?.(key, null, 'clusterIP');
    this.changed(kind, key, deleteLine(kind, key));
  }

  /** The whole set of one kind (after a list or relist): puts each, removes what is gone. */
  replaceAll(kind: HubKind, items: Iterable<Prepared>): void {
    const seen = new Set<string>();
    for (const p of items) {
      seen.add(p.key);
      this.put(kind, p);
    }
    for (const key of [...this.maps[kind].keys()]) if (!seen.has(key)) this.remove(kind, key);
    for (const pk of [...this.problems.keys()]) {
      if (pk.startsWith(`${kind} `) && !seen.has(pk.slice(kind.length + 1))) this.problems.delete(pk); // gone without a record
    }
  }

  /** The source has delivered a whole world: agents waiting for one get their snapshot. */
  markSynced(): void {
    if (this.syncedV) return;
    this.syncedV = true;
    this.o.log('info', 'discovery synced', { services: this.maps.service.size, slices: this.maps.slice.size, endpoints: this.endpoints, pods: this.maps.pod.size });
    for (const w of this.waiters.splice(0)) w();
    for (const s of this.subs) if (s.phase === 'waiting') this.startSnapshot(s);
  }

  private set(kind: HubKind, e: Entry): void {
    const m = this.maps[kind];
    const prev = m.get(e.key);
    if (prev?.line === e.line) {
      this.stats.unchanged++;
      return;
    }
    this.endpoints += e.endpoints - (prev?.endpoints ?? 0);
    m.set(e.key, e);
    if (kind === 'service') this.onService?.(e.key, e.ports ?? [], e.addressing ?? 'clusterIP');
    this.changed(kind, e.key, e.line);
  }

  private changed(kind: HubKind, key: string, line: string): void {
    const cur = this.current;
    if (cur !== undefined && cur.readers === 0 && this.o.now() - cur.builtAt >= this.o.snapshotReuseMs) {
      // Nobody reads it and the next agent would get a new one anyway: free it now.
      this.reading.delete(cur);
      this.current = undefined;
    }
    for (const snap of this.reading) snap.changed[kind].add(key);
    if (!this.syncedV) return; // nobody has a world yet: the first snapshot carries it
    this.pending.push(line);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private noteProblems(kind: HubKind, key: string, problems: string[]): void {
    const pk = `${kind} ${key}`;
    if (problems.length === 0) {
      this.problems.delete(pk);
      return;
    }
    const text = problems.join('; ');
    if (this.problems.get(pk) === text) return;
    this.problems.set(pk, text);
    const msg = kind === 'route' || kind === 'access' ? `${key}: ${text}` : `${describeObject(kind, key)}: ${text}`;
    this.recentProblems.push({ at: new Date(this.o.now()).toISOString(), msg });
    if (this.recentProblems.length > 20) this.recentProblems.shift();
    this.o.log('warn', `discovery: ${msg}; the rest of the object is used`);
  }

  /** Sends this turn's changes to every live agent as one chunk. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.pending.length === 0) return;
    const buf = Buffer.from(this.pending.join('\n') + '\n');
    this.stats.deltas += this.pending.length;
    this.pending = [];
    for (const s of this.subs) {
      // A snapshot still being read sends these by key in its tail; once the tail is built, they queue behind it.
      if (s.phase !== 'live' && s.tail === undefined) continue;
      s.queue.push(buf);
      s.queuedBytes += buf.length;
      // The stream takes what it accepts first: only what stays queued behind one that asked to
      // wait counts, so one turn's burst larger than the bound (shared by every agent) does not
      // close agents that read.
      this.pump(s);
      if (s.queuedBytes > this.o.maxQueuedBytes) {
        this.stats.closedSlow++;
        this.drop(s, `agent on node ${s.node} did not read ${s.queuedBytes} bytes of discovery updates; closed its stream (it reconnects and resyncs)`, true);
      }
    }
  }

  // ---- the agents' side ---------------------------------------------------------------------

  /**
   * A new agent stream. Until the source has synced it waits; then it gets the snapshot and the
   * deltas. A newer stream with the same agent id replaces an older one. Returns the unsubscribe
   * the caller runs when the stream closes.
   */
  subscribe(out: Writable, info: { node: string; agentId: string }, close: (why: string, slow: boolean) => void): () => void {
    for (const s of this.subs) if (s.agentId === info.agentId) this.drop(s, `agent ${info.agentId} on node ${s.node} opened a newer discovery stream`);
    const s: Subscriber = { ...info, since: this.o.now(), out, close, phase: 'waiting', next: 0, tailAt: 0, queue: [], queuedBytes: 0, draining: false, sentBytes: 0, syncedAt: 0 };
    this.subs.add(s);
    if (this.syncedV) this.startSnapshot(s);
    return () => this.unsubscribe(s);
  }

  private unsubscribe(s: Subscriber): void {
    if (!this.subs.delete(s)) return;
    clearTimeout(s.stall);
    this.release(s);
    s.tail = undefined;
    s.phase = 'closed';
    s.queue = [];
    s.queuedBytes = 0;
  }

  private drop(s: Subscriber, why: string, slow = false): void {
    this.o.log('warn', why);
    this.unsubscribe(s);
    s.close(why, slow);
  }

  /** Lets go of a snapshot being read; one no longer current and read by nobody is freed. */
  private release(s: Subscriber): void {
    const snap = s.snap;
    s.snap = undefined;
    if (snap === undefined) return;
    snap.readers--;
    if (snap.readers === 0 && snap !== this.current) this.reading.delete(snap);
  }

  private startSnapshot(s: Subscriber): void {
    const now = this.o.now();
    let snap = this.current;
    const stale = snap !== undefined && KINDS.some((k) => snap!.changed[k].size > 0) && now - snap.builtAt >= this.o.snapshotReuseMs;
    if (snap === undefined || stale) {
      if (snap !== undefined && snap.readers === 0) this.reading.delete(snap);
      snap = this.buildSnapshot(now);
      this.current = snap;
      this.reading.add(snap);
    }
    snap.readers++;
    s.snap = snap;
    s.next = 0;
    s.phase = 'snapshot';
    this.pump(s);
  }

  private buildSnapshot(now: number): Snapshot {
    const chunks: Buffer[] = [];
    let parts: string[] = [RESET_LINE];
    let size = RESET_LINE.length + 1;
    let bytes = 0;
    const cut = () => {
      const b = Buffer.from(parts.join('\n') + '\n');
      chunks.push(b);
      bytes += b.length;
      parts = [];
      size = 0;
    };
    for (const kind of KINDS) {
      for (const e of this.maps[kind].values()) {
        parts.push(e.line);
        size += e.line.length + 1;
        if (size >= this.o.chunkBytes) cut();
      }
    }
    if (parts.length > 0) cut();
    this.stats.snapshotsBuilt++;
    this.stats.lastSnapshotBytes = bytes;
    return { chunks, bytes, builtAt: now, changed: emptyChanged(), readers: 0 };
  }

  /** What completes a snapshot read to its end: the current line of everything changed since it was built, then synced. */
  private tailOf(snap: Snapshot): string[] {
    const lines: string[] = [];
    for (const kind of KINDS) {
      for (const key of snap.changed[kind]) lines.push(this.maps[kind].get(key)?.line ?? deleteLine(kind, key));
    }
    lines.push(SYNCED_LINE);
    return lines;
  }

  /** Hands the stream what it is owed, one chunk at a time, until it asks to wait. */
  private pump(s: Subscriber): void {
    while (!s.draining && s.phase !== 'closed') {
      const chunk = this.nextChunk(s);
      if (chunk === undefined) return;
      s.sentBytes += chunk.length;
      if (!s.out.write(chunk)) {
        s.draining = true;
        // The live phase is bounded by maxQueuedBytes; a snapshot holds the world however long
        // the agent leaves it unread (TCP never gives up on a peer that acks and reads nothing).
        if (s.phase === 'snapshot') {
          s.stall = setTimeout(() => {
            if (s.phase !== 'snapshot' || !s.draining) return;
            this.stats.closedSlow++;
            this.drop(s, `agent ${s.agentId} on node ${s.node} read nothing of its discovery snapshot for ${this.o.snapshotStallMs} ms; closed its stream (it reconnects and resyncs)`, true);
          }, this.o.snapshotStallMs);
          s.stall.unref();
        }
        s.out.once('drain', () => {
          clearTimeout(s.stall);
          s.draining = false;
          this.pump(s);
        });
      }
    }
  }

  private nextChunk(s: Subscriber): Buffer | undefined {
    if (s.phase === 'snapshot') {
      if (s.tail === undefined) {
        const snap = s.snap!;
        if (s.next < snap.chunks.length) return snap.chunks[s.next++];
        // What changed since the build, current state by key, then synced. Changes from now on
        // are queued behind it (flush()), so the snapshot's note of them is no longer needed.
        s.tail = this.tailOf(snap);
        s.tailAt = 0;
        this.release(s);
      }
      const tail = s.tail;
      const start = s.tailAt;
      let size = 0;
      while (s.tailAt < tail.length && size < this.o.chunkBytes) size += tail[s.tailAt++]!.length + 1;
      const parts = tail.slice(start, s.tailAt);
      if (s.tailAt === tail.length) {
        s.tail = undefined;
        s.phase = 'live';
        s.syncedAt = this.o.now();
      }
      return Buffer.from(parts.join('\n') + '\n');
    }
    if (s.phase !== 'live') return undefined;
    const b = s.queue.shift();
    if (b !== undefined) s.queuedBytes -= b.length;
    return b;
  }

  /** Closes every agent stream (the controller stopping). */
  closeAll(why: string): void {
    for (const s of [...this.subs]) {
      this.unsubscribe(s);
      s.close(why, false);
    }
  }

  counts() {
    return { services: this.maps.service.size, slices: this.maps.slice.size, endpoints: this.endpoints, pods: this.maps.pod.size, routes: this.maps.route.size, access: this.maps.access.size };
  }

  agents(limit = 200): Array<{ node: string; agentId: string; since: string; state: Phase; sentBytes: number; queuedBytes: number }> {
    return [...this.subs].slice(0, limit).map((s) => ({
      node: s.node, agentId: s.agentId, since: new Date(s.since).toISOString(), state: s.phase, sentBytes: s.sentBytes, queuedBytes: s.queuedBytes,
    }));
  }

  state(): HubState {
    let live = 0;
    for (const s of this.subs) if (s.phase === 'live') live++;
    return {
      synced: this.syncedV,
      ...this.counts(),
      objectsWithProblems: this.problems.size,
      agents: this.subs.size,
      agentsLive: live,
      ...this.stats,
      recentProblems: this.recentProblems.slice(-10),
    };
  }
}
