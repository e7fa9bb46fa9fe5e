// The main thread's side of the proxy workers (docs/proxy.md, "Workers"): starts them, tells
// them what changed (pods, discovery, taps), collects their telemetry when the agent needs it
// (a scrape, a report, a status), restarts one that dies, replaces one whose event loop stops
// answering, and drains them all on stop. Never a message per connection or request: pings once
// a second, state when it changes, telemetry when asked.
import { Worker } from 'node:worker_threads';
import type { BalancerCount } from '../routing/router.ts';
import type { DiscoMessage } from '../discovery/model.ts';
import type { TapFilter, TapRecord } from '../telemetry/tap.ts';
import type { CredentialUpdate } from '../identity/credentials.ts';
import type { TunnelStats } from '../tunnel/node-tunnels.ts';
import { BOOST_LIMIT_MS, lowerThreads, raisedForThread, threadIds } from './priority.ts';
import { clock, type FromWorker, type PodsTable, type TelemetryBatch, type ToWorker, type WorkerInit, type WorkerStats } from './protocol.ts';

export type WorkerState = 'starting' | 'running' | 'restarting' | 'stopping' | 'stopped';

export interface PoolOptions<L> {
  /** Worker threads (the main thread's proxy is not one of them): indexes 1..count. */
  count: number;
  /** What worker `index` starts from, built at each (re)start, so a replacement gets today's pods, discovery and taps. */
  init: (index: number) => WorkerInit;
  /** A fresh ledger per worker incarnation (what merge() keeps so forget() can take it back). */
  ledger: () => L;
  /** A worker's telemetry since its last collect. */
  merge: (batch: TelemetryBatch, ledger: L) => void;
  /** A worker died or was replaced: what it still counted as open is not. */
  forget: (ledger: L) => void;
  /** Tap matches a worker sent (TapRegistry.offer). */
  tap: (id: string, rec: TapRecord) => void;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: object) => void;
  /** The worker script; default ./worker.ts next to this file (tests pass fixtures). */
  script?: URL;
  /** How often each worker is pinged (its lag measured). Default 1000 ms. */
  pingIntervalMs?: number;
  /** A worker that has not answered for this long is stuck: replaced. Default 5000 ms. */
  lagLimitMs?: number;
  /** A collect waits this long for a worker; one that is late adds its counts at the next collect. Default 2000 ms. */
  collectTimeoutMs?: number;
  /** A worker must be listening within this after it starts. Default 15000 ms. */
  startTimeoutMs?: number;
  /** A worker applied a pods message (policyLoaded() may have changed). */
  onPolicyLoaded?: () => void;
}

export interface WorkerStatus {
  index: number;
  state: WorkerState;
  /** Starts after the first: deaths and replacements. */
  restarts: number;
  /** Of those, replacements because the event loop stopped answering. */
  stuck: number;
  /** The worker's thread CPU time, summed over its incarnations, seconds. */
  cpuSeconds: number;
  /** The delay of its last answer to a ping (event-loop lag plus the message), ms; null before one. */
  lagMs: number | null;
  /** Connections its proxies accepted, summed over its incarnations. */
  accepted: number;
  open: number;
  startedAt: string | null;
  lastExit: string | null;
}

interface Slot<L> {
  index: number;
  worker: Worker | null;
  state: WorkerState;
  restarts: number;
  stuck: number;
  /** Restarts within the last minute: the backoff grows with them. */
  recent: number[];
  ledger: L;
  stats: WorkerStats | null;
  /** Totals of earlier incarnations. */
  pastCpuUs: number;
  pastAccepted: number;
  lagMs: number | null;
  lastAnswerAt: number;
  startedAt: number | null;
  lastExit: string | null;
  /** When the last incarnation exited (performance clock), until its replacement listens. */
  exitedAt: number | null;
  waiters: Map<number, (m: FromWorker | null) => void>;
  /** The inbound policy table generation this incarnation decides with: its init's, then each pods message it confirmed. */
  policyLoaded: number;
  ready: Promise<void>;
  timer: NodeJS.Timeout | null;
}

/** How long a worker may take to close its proxy once its drain is over (its deadline, or a cut); then it is terminated. */
const CLOSE_AFTER_CUT_MS = 2000;

const WORKER_SCRIPT = new URL(`./worker${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url);

export class WorkerPool<L> {
  private readonly o: PoolOptions<L> & Required<Pick<PoolOptions<L>, 'pingIntervalMs' | 'lagLimitMs' | 'collectTimeoutMs' | 'startTimeoutMs'>>;
  private readonly slots: Array<Slot<L>>;
  private seq = 0;
  private pinger: NodeJS.Timeout | null = null;
  private stopping = false;
  /** cutDrain() was called: the drain ends now, in close() to come too. */
  private cut = false;
  private readonly cutWaits = new Set<() => void>();
  /** The drain under way: one per pool, as each slot has one close waiter and each worker one close. */
  private closing: Promise<void> | null = null;
  private pendingDiscovery: Array<DiscoMessage | 'drop-staged'> = [];
  private discoveryFlush: NodeJS.Immediate | null = null;
  /** Whether the log said once that replacements start at normal priority. */
  private toldNoBoost = false;

  constructor(o: PoolOptions<L>) {
    if (!Number.isInteger(o.count) || o.count < 0) throw new Error(`proxy worker threads: ${o.count} is not a whole number`);
    this.o = { pingIntervalMs: 1000, lagLimitMs: 5000, collectTimeoutMs: 2000, startTimeoutMs: 15_000, ...o };
    this.slots = Array.from({ length: o.count }, (_, i) => ({
      index: i + 1, worker: null, state: 'stopped' as WorkerState, restarts: 0, stuck: 0, recent: [], ledger: o.ledger(), stats: null,
      pastCpuUs: 0, pastAccepted: 0, lagMs: null, lastAnswerAt: 0, startedAt: null, lastExit: null, exitedAt: null, waiters: new Map(), policyLoaded: 0, ready: Promise.resolve(), timer: null,
    }));
  }

  /** Starts every worker; resolves when all listen, rejects with the first one's reason if one cannot. */
  async start(): Promise<void> {
    for (const s of this.slots) this.spawn(s);
    this.pinger = setInterval(() => this.tick(), this.o.pingIntervalMs);
    this.pinger.unref();
    await Promise.all(this.slots.map((s) => s.ready));
  }

  private spawn(s: Slot<L>): void {
    s.state = 'starting';
    s.startedAt = Date.now();
    s.lastAnswerAt = clock();
    s.lagMs = null;
    let w: Worker;
    try {
      const init = this.o.init(s.index);
      s.policyLoaded = init.pods?.policies?.generation ?? 0;
      const make = (restoreNice: number | undefined) =>
        new Worker(this.o.script ?? WORKER_SCRIPT, { workerData: restoreNice === undefined ? init : { ...init, restoreNice }, stdout: false, stderr: false });
      // A replacement restores capacity the node is short of: its thread starts at a raised
      // priority, not at a fair share of a loaded CPU (workers/priority.ts). The first start does not.
      if (s.restarts === 0) w = make(undefined);
      else {
        const before = threadIds();
        const { value, raisedFrom } = raisedForThread(make, (e) => this.noBoost(e));
        w = value;
        if (raisedFrom !== undefined) this.capBoost(s, w, [...threadIds()].filter((t) => !before.has(t)), raisedFrom);
      }
    } catch (e) {
      s.ready = Promise.reject(new Error(`proxy worker ${s.index} could not start: ${(e as Error).message}`));
      s.ready.catch(() => {});
      this.exited(s, null, `could not start: ${(e as Error).message}`);
      return;
    }
    s.worker = w;
    let failure: string | null = null;
    s.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`proxy worker ${s.index} did not listen within ${this.o.startTimeoutMs} ms`)), this.o.startTimeoutMs);
      const settle = (err: string | null) => {
        clearTimeout(timer);
        if (err === null) resolve();
        else reject(new Error(`proxy worker ${s.index} could not start: ${err}`));
      };
      w.on('message', (m: FromWorker) => {
        if (s.worker !== w) return;
        if (m.t === 'ready') {
          if (s.state === 'starting') s.state = 'running';
          s.lastAnswerAt = clock();
          if (s.exitedAt !== null) {
            this.o.log('info', `proxy worker ${s.index} replaced: listening ${Math.round(performance.now() - s.exitedAt)} ms after its predecessor exited`, { worker: s.index, restarts: s.restarts, ms: Math.round(performance.now() - s.exitedAt) });
            s.exitedAt = null;
          }
          settle(null);
        } else if (m.t === 'failed') {
          failure = m.error;
          settle(m.error);
        } else this.onMessage(s, m);
      });
      w.once('exit', () => settle(failure ?? 'exited before listening'));
    });
    s.ready.catch(() => {}); // start() reports it; a restart's failure is logged at exit
    w.on('error', (e) => {
      failure = `${e.message}`;
      this.o.log('error', `proxy worker ${s.index} failed: ${e.stack ?? e.message}`);
    });
    w.on('exit', (code) => {
      if (s.worker !== w) return;
      this.exited(s, code, failure);
    });
  }

  /**
   * The worker lowers itself once it listens; one that has not within BOOST_LIMIT_MS is lowered
   * from here (its thread was created by `new Worker()`, so it is among `tids`), so a start stuck
   * in a loop does not take the CPU from the proxies still serving.
   */
  private capBoost(s: Slot<L>, w: Worker, tids: number[], nice: number): void {
    const timer = setTimeout(() => {
      if (s.worker !== w || s.state !== 'starting') return;
      const failed = lowerThreads(tids, nice);
      this.o.log('warn', `proxy worker ${s.index} has not listened ${BOOST_LIMIT_MS} ms after it started: its thread is back at normal priority, so a start that is stuck does not crowd out the other proxies${failed.length ? ` (not lowered: ${failed.join('; ')})` : ''}`);
    }, BOOST_LIMIT_MS);
    timer.unref();
    const clear = () => clearTimeout(timer);
    w.on('message', (m: FromWorker) => {
      if (m.t === 'ready' || m.t === 'failed') clear();
    });
    w.once('exit', clear);
  }

  private noBoost(e: Error): void {
    if (this.toldNoBoost) return;
    this.toldNoBoost = true;
    this.o.log('info', `a replacement proxy worker starts at normal scheduling priority, so on a busy node it listens only as fast as a fair share of the CPU allows: raising its thread's priority was refused (${e.message}); grant the agent CAP_SYS_NICE (the DaemonSet adds SYS_NICE) to have it start raised`);
  }

  private exited(s: Slot<L>, code: number | null, why: string | null): void {
    s.worker = null;
    if (s.stats) {
      s.pastCpuUs += s.stats.cpuUserUs + s.stats.cpuSystemUs;
      s.pastAccepted += s.stats.proxy.accepted;
      s.stats = null;
    }
    for (const [, wake] of s.waiters) wake(null);
    s.waiters.clear();
    this.o.forget(s.ledger);
    s.ledger = this.o.ledger();
    s.lastExit = new Date().toISOString();
    s.exitedAt = performance.now();
    if (this.stopping || s.state === 'stopping') {
      s.state = 'stopped';
      return;
    }
    s.restarts++;
    const now = Date.now();
    s.recent = s.recent.filter((t) => now - t < 60_000);
    s.recent.push(now);
    // The first restart in a minute is at once; a worker that keeps dying waits longer each time.
    const delay = Math.min(5000, s.recent.length <= 1 ? 0 : 100 * 2 ** (s.recent.length - 2));
    s.state = 'restarting';
    this.o.log('warn', `proxy worker ${s.index} exited (${why ?? `code ${code}`}); restarting it${delay ? ` in ${delay} ms` : ''}, the other proxies keep serving`, { restarts: s.restarts });
    s.timer = setTimeout(() => {
      s.timer = null;
      if (!this.stopping) this.spawn(s);
    }, delay);
  }

  private onMessage(s: Slot<L>, m: FromWorker): void {
    switch (m.t) {
      case 'log':
        this.o.log(m.level, `proxy worker ${s.index}: ${m.msg}`, m.fields);
        return;
      case 'tap':
        for (const [id, rec] of m.records) this.o.tap(id, rec);
        return;
      case 'pong':
        s.lastAnswerAt = clock();
        s.lagMs = m.lagMs;
        s.stats = m.stats;
        return;
      case 'collected':
        s.lastAnswerAt = clock();
        s.stats = m.stats;
        this.o.merge(m.batch, s.ledger);
        s.waiters.get(m.seq)?.(m);
        return;
      case 'policy-loaded':
        s.policyLoaded = m.generation;
        this.o.onPolicyLoaded?.();
        return;
      case 'described':
        s.lastAnswerAt = clock();
        s.waiters.get(m.seq)?.(m);
        return;
      case 'closed':
        s.waiters.get(-1)?.(m);
        return;
    }
  }

  private post(s: Slot<L>, m: ToWorker): void {
    s.worker?.postMessage(m);
  }

  private broadcast(m: ToWorker): void {
    for (const s of this.slots) if (s.state === 'running' || s.state === 'starting') this.post(s, m);
  }

  /**
   * Ends a worker that is to be replaced (its exit spawns the next). Until the exit, which a busy
   * machine may delay past several ticks, it is restarting: not asked, not pinged, not judged again.
   */
  private replace(s: Slot<L>): void {
    s.state = 'restarting';
    void s.worker?.terminate();
  }

  /** Pings the workers; replaces one that has not answered within lagLimitMs. */
  private tick(): void {
    const now = clock();
    for (const s of this.slots) {
      if (s.worker === null) continue;
      const silent = now - s.lastAnswerAt;
      if (s.state === 'starting' && silent > this.o.startTimeoutMs) {
        this.o.log('warn', `proxy worker ${s.index} did not listen within ${this.o.startTimeoutMs} ms; replacing it`);
        this.replace(s);
        continue;
      }
      if (s.state !== 'running') continue;
      if (silent > this.o.lagLimitMs) {
        s.stuck++;
        this.o.log('warn', `proxy worker ${s.index} has not answered for ${Math.round(silent)} ms (its event loop is stuck); replacing it, its connections are closed`, { stuck: s.stuck });
        this.replace(s);
        continue;
      }
      this.post(s, { t: 'ping', seq: ++this.seq, at: clock() });
    }
  }

  /** Asks one worker and waits for its answer (null: it died, or did not answer in time). */
  private ask(s: Slot<L>, m: ToWorker & { seq: number }, timeoutMs: number): Promise<FromWorker | null> {
    if (s.state !== 'running' || s.worker === null) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => done(null), timeoutMs);
      const done = (r: FromWorker | null) => {
        clearTimeout(timer);
        s.waiters.delete(m.seq);
        resolve(r);
      };
      s.waiters.set(m.seq, done);
      this.post(s, m);
    });
  }

  /** Every running worker's telemetry since its last collect, merged (merge()); resolves when all answered or timed out. */
  async collect(): Promise<void> {
    await Promise.all(this.slots.map((s) => this.ask(s, { t: 'collect', seq: ++this.seq }, this.o.collectTimeoutMs)));
  }

  /** A diagnostics question to every running worker's router: their answers, by worker index. */
  async describe(namespace: string, name: string): Promise<Array<{ index: number; result: unknown; error?: string }>> {
    const answers = await Promise.all(this.slots.map(async (s) => ({ s, r: await this.ask(s, { t: 'describe', seq: ++this.seq, namespace, name }, this.o.collectTimeoutMs) })));
    const out: Array<{ index: number; result: unknown; error?: string }> = [];
    for (const { s, r } of answers) if (r?.t === 'described') out.push({ index: s.index, result: r.result, ...(r.error ? { error: r.error } : {}) });
    return out;
  }

  setPods(table: PodsTable): void {
    this.broadcast({ t: 'pods', table });
  }

  /** One message of the main thread's discovery store; sent on in batches, in order. */
  discovery(m: DiscoMessage | 'drop-staged'): void {
    this.pendingDiscovery.push(m);
    this.discoveryFlush ??= setImmediate(() => {
      this.discoveryFlush = null;
      const msgs = this.pendingDiscovery;
      this.pendingDiscovery = [];
      this.broadcast({ t: 'discovery', msgs });
    });
  }

  /** The node's zone as the main thread's store has it: every worker's store follows (topology hints). */
  setZone(zone: string | undefined): void {
    this.broadcast({ t: 'zone', zone: zone ?? null });
  }

  setTaps(filters: TapFilter[]): void {
    this.broadcast({ t: 'taps', filters });
  }

  /** Certificates the identity manager published: every worker's tunnels get them. */
  credentials(updates: CredentialUpdate[]): void {
    this.broadcast({ t: 'creds', updates });
  }

  /** Each running worker's tunnel counters, as of its last answer. */
  tunnelStats(): TunnelStats[] {
    const out: TunnelStats[] = [];
    for (const s of this.slots) if (s.stats?.tunnels) out.push(s.stats.tunnels);
    return out;
  }

  status(): WorkerStatus[] {
    return this.slots.map((s) => ({
      index: s.index,
      state: s.state,
      restarts: s.restarts,
      stuck: s.stuck,
      cpuSeconds: (s.pastCpuUs + (s.stats ? s.stats.cpuUserUs + s.stats.cpuSystemUs : 0)) / 1e6,
      lagMs: s.lagMs,
      accepted: s.pastAccepted + (s.stats?.proxy.accepted ?? 0),
      open: s.stats?.proxy.open ?? 0,
      startedAt: s.startedAt === null ? null : new Date(s.startedAt).toISOString(),
      lastExit: s.lastExit,
    }));
  }

  /** Each running worker's balancers, as of its last answer (a ping's, at most a second old). */
  balancerCounts(): BalancerCount[][] {
    return this.slots.flatMap((s) => (s.stats?.balancers && s.worker ? [s.stats.balancers] : []));
  }

  /**
   * Whether every worker that may accept a connection (starting or running) decides with the
   * inbound policy table `generation` or a later one: confirmed by the worker as it applies the
   * pods message, not read from its last ping.
   */
  policyLoaded(generation: number): boolean {
    return this.slots.every((s) => s.worker === null || (s.state !== 'starting' && s.state !== 'running') || s.policyLoaded >= generation);
  }

  /** The inbound policy table generation each worker that may accept a connection has confirmed (status). */
  policyGenerations(): number[] {
    return this.slots.flatMap((s) => (s.worker !== null && (s.state === 'starting' || s.state === 'running') ? [s.policyLoaded] : []));
  }

  /** The running workers' proxy counters, as of their last answer (collect() refreshes them). */
  proxyStats(): Array<WorkerStats['proxy']> {
    return this.slots.flatMap((s) => (s.stats && s.worker ? [s.stats.proxy] : []));
  }

  /** Worker `index` is terminated as a crash would end it (tests, and a stuck worker). */
  kill(index: number): Promise<number> {
    const s = this.slots.find((x) => x.index === index);
    if (!s?.worker) return Promise.reject(new Error(`proxy worker ${index} is not running`));
    return s.worker.terminate();
  }

  /** Ends every worker's drain (close(), now or to come) at once. */
  cutDrain(): void {
    this.cut = true;
    for (const s of this.slots) this.post(s, { t: 'cut' });
    for (const f of [...this.cutWaits]) f();
  }

  /**
   * Drains every worker's connections for up to drainMs, then ends the threads. A second call
   * joins the drain under way (its drainMs is the first's; cutDrain() is what shortens it).
   */
  close(drainMs: number): Promise<void> {
    return (this.closing ??= this.drainAndEnd(drainMs));
  }

  private async drainAndEnd(drainMs: number): Promise<void> {
    this.stopping = true;
    if (this.pinger) clearInterval(this.pinger);
    await Promise.all(this.slots.map(async (s) => {
      if (s.timer) clearTimeout(s.timer);
      const w = s.worker;
      s.state = 'stopping';
      if (w === null) {
        s.state = 'stopped';
        return;
      }
      const exited = new Promise<void>((r) => w.once('exit', () => r()));
      // Idle pooled upstreams may keep a drained worker's loop alive: once it has closed its proxy, end it.
      // After a cut a worker has CLOSE_AFTER_CUT_MS to close what it has, not what was left of drainMs.
      let onCut = (): void => {};
      const closed = new Promise<void>((r) => {
        let timer = setTimeout(r, this.cut ? CLOSE_AFTER_CUT_MS : drainMs + CLOSE_AFTER_CUT_MS);
        onCut = () => {
          clearTimeout(timer);
          timer = setTimeout(r, CLOSE_AFTER_CUT_MS);
        };
        s.waiters.set(-1, () => {
          clearTimeout(timer);
          r();
        });
      });
      this.cutWaits.add(onCut);
      this.post(s, { t: 'close', drainMs });
      await Promise.race([closed, exited]);
      this.cutWaits.delete(onCut);
      await w.terminate();
      await exited;
    }));
  }
}
