// Keeps a local copy of one kind of object in step with the API server, the way client-go's
// reflector does: list, then watch from the list's resourceVersion; resume a dropped watch from
// the last version seen (bookmarks included); relist only when that version has expired (410).
import type { WatchClient } from './kube-api.ts';
import { agentRbacHint, Backoff, describeFailure, describeRefusal, grantFor, resourceOf, serverMessage, statusOf, type BackoffOptions } from './watch-errors.ts';

type Obj = Record<string, any>;

/**
 * The API server refuses this kind: every list or watch since `since` was answered `status`
 * (403: the ServiceAccount may not; 401: its token is not accepted, expired or revoked; 404 where
 * `refusedOn` includes it: the kind is not served).
 * A state, not an event: it is said once when it begins and once when a list or watch is
 * accepted again, not at every retry.
 */
export interface Refusal {
  status: number;
  /** The request refused first in this state. */
  verb: 'list' | 'watch';
  /** The API server's words (the Status message), e.g. 'pods is forbidden: User "…" cannot list resource "pods" …'. */
  message: string;
  /** Date.now() when the refusal began. */
  since: number;
}

export interface ReflectorOptions {
  /** For messages: "pods", "namespaces". */
  name: string;
  /** Collection path, e.g. /api/v1/pods; a function for a kind whose served version the list picks (the watch follows it). */
  path: string | (() => string);
  fieldSelector?: string;
  /** `signal` aborts when stop() is called: the list in flight should end then. */
  list: (signal: AbortSignal) => Promise<{ items: Obj[]; resourceVersion: string }>;
  watch: WatchClient;
  /** API server address, for messages. */
  server: string;
  watchdogMs: number;
  backoff: BackoffOptions;
  /** The store changed through a watch event: the object set (added or modified) or deleted, as stored. */
  onChange: (op: 'set' | 'delete', key: string, obj: Obj) => void;
  /**
   * Applied to every object before it is stored (as client-go's SetTransform): keep only the
   * fields the consumer reads, so a cluster-wide store does not hold whole objects.
   */
  transform?: (obj: Obj) => Obj;
  /** What to say on a 403 (default: the agent's ClusterRole, naming this kind). */
  rbacHint?: string;
  /**
   * Statuses that put the reflector in the refused state (default [403]); 404 for a kind whose CRD
   * may be missing. A 401 always does, whatever this says (a token problem, retried per request as
   * by client-go, but said once: every retry is refused alike until the token rotates).
   */
  refusedOn?: readonly number[];
  /**
   * Whether a refused list counts as listed and empty (then the watch, from "now", is retried
   * until accepted and brings the objects), or fails and is retried keeping the store (default):
   * a kind that restricts access must never read as "none". Never asked for a 401 (the token
   * refused says nothing of the kind): that list fails.
   */
  emptyWhenRefused?: (status: number) => boolean;
  /**
   * The refused state began (or its status changed). `line` is what is said by default (onError):
   * the refusal, the hint and the RBAC rule to grant. Not called for a 401, whose line (the token
   * refused, TOKEN_HINT) goes to onError: the consumers' words are about RBAC rules and CRDs.
   */
  onRefused?: (r: Refusal, line: string) => void;
  /**
   * A refused watch lists again (after the backoff) instead of watching again: for a kind whose
   * list picks the version the API server serves, so CRDs installed later at another version are found.
   */
  relistWhenWatchRefused?: boolean;
  /** A list or watch was accepted after `was`. */
  onAccepted?: (was: Refusal) => void;
  /** A list replaced the store. */
  onSynced: () => void;
  onError: (e: Error) => void;
}

type WatchEnd =
  | { kind: 'gone'; events: number }
  | { kind: 'silent'; events: number }
  | { kind: 'closed'; events: number }
  | { kind: 'error'; events: number; err: unknown }
  | { kind: 'stopped'; events: number };

/** A watch that ended sooner than this is not healthy (client-go's "very short watch"). */
const SHORT_WATCH_MS = 1_000;

/** A refusal as status pages show it. */
export interface RefusalStatus {
  status: number;
  verb: 'list' | 'watch';
  message: string;
  /** ISO time the refusal began. */
  since: string;
  /** The RBAC rule that ends it: "list and watch on pods (core group)"; null for a 401 (the token refused: no rule ends it). */
  grant: string | null;
}

/** The line said when a refused kind is accepted again. */
export function acceptedLine(name: string, was: Refusal, now = Date.now()): string {
  return `${name}: the API server accepts the list/watch again (refused with HTTP ${was.status} for ${Math.round((now - was.since) / 1000)} s, since ${new Date(was.since).toISOString()})`;
}

export function objectKey(o: Obj): string {
  const md = o?.metadata ?? {};
  return md.namespace ? `${md.namespace}/${md.name}` : String(md.name);
}

export class Reflector {
  readonly store = new Map<string, Obj>();
  resourceVersion = '';
  connected = false;
  lastEventAt = 0;
  restarts = 0;
  synced = false;
  /** Set while the API server refuses this kind (see Refusal); null once a list or watch is accepted. */
  refused: Refusal | null = null;
  private readonly o: ReflectorOptions;
  /** Said on a 403: the consumer's, or the agent's naming this kind. */
  private readonly rbacHint: string;
  private readonly backoff: Backoff;
  private stopped = false;
  private sleeping?: { timer: NodeJS.Timeout; wake: () => void };
  private abortWatch?: () => void;
  /** Aborted by stop(): the list and the watch request in flight end at once, not at their timeout. */
  private readonly stopping = new AbortController();

  constructor(o: ReflectorOptions) {
    this.o = o;
    this.rbacHint = o.rbacHint ?? agentRbacHint(resourceOf(typeof o.path === 'string' ? o.path : o.path()).resource);
    this.backoff = new Backoff(o.backoff);
  }

  /** The refused state for a status page; null when not refused. */
  refusedStatus(): RefusalStatus | null {
    const r = this.refused;
    return r && { status: r.status, verb: r.verb, message: r.message, since: new Date(r.since).toISOString(), grant: r.status === 401 ? null : grantFor(this.path) };
  }

  private get path(): string {
    return typeof this.o.path === 'string' ? this.o.path : this.o.path();
  }

  /** The plural it reflects ("pods", "httproutes"). */
  get kindName(): string {
    return this.o.name;
  }

  /** Runs until stop(); never rejects. */
  async run(): Promise<void> {
    let needList = true;
    while (!this.stopped) {
      if (needList) {
        try {
          let l: { items: Obj[]; resourceVersion: string };
          try {
            l = await this.o.list(this.stopping.signal);
            if (this.stopped) return;
            this.accepted();
          } catch (e) {
            const status = this.refusal(e);
            if (this.stopped || status === undefined || status === 401 || !this.o.emptyWhenRefused?.(status)) throw e;
            this.refuse(status, 'list', e);
            // Listed as none: the watch from "now" ("" version) starts with every object as
            // ADDED once it is accepted.
            l = { items: [], resourceVersion: '' };
          }
          this.store.clear();
          const keep = this.o.transform ?? ((x: Obj) => x);
          for (const item of l.items) this.store.set(objectKey(item), keep(item));
          this.resourceVersion = l.resourceVersion;
          needList = false;
          this.synced = true;
          // No backoff reset here: a list that succeeds before a watch that fails at once (a
          // server answering every watch 410) would otherwise relist in a flat loop.
          this.o.onSynced();
        } catch (e) {
          if (this.stopped) return;
          const status = this.refusal(e);
          if (status !== undefined) this.refuse(status, 'list', e);
          else this.report(describeFailure(`list ${this.o.name}`, this.o.server, e, this.rbacHint));
          await this.sleep(this.backoff.next());
          continue;
        }
      }
      const from = this.resourceVersion;
      const openedAt = Date.now();
      const end = await this.watchOnce();
      this.connected = false;
      if (this.stopped || end.kind === 'stopped') return;
      this.restarts++;
      // A watch that stayed open was healthy: the next failure starts the backoff over. One that
      // ended within a second, whatever it delivered and however it ended, is a server or path
      // in trouble: the next request waits for the backoff, which keeps growing, so a server that
      // ends every watch at once (closed, 410, an error) is not hammered with watches or lists
      // (client-go's "very short watch" backs off and relists; we resume).
      const short = Date.now() - openedAt < SHORT_WATCH_MS;
      if (!short) this.backoff.reset();
      const resume = `resuming from resourceVersion ${this.resourceVersion}`;
      if (end.kind === 'gone' || (end.kind === 'error' && statusOf(end.err) === 410)) {
        needList = true;
        this.report(`watch ${this.o.name} from resourceVersion ${from}: expired (410 Gone); relisting`);
        if (short) await this.sleep(this.backoff.next());
      } else if (end.kind === 'silent') {
        this.report(`watch ${this.o.name} silent for ${this.o.watchdogMs} ms (no events, no bookmarks); restarting, ${resume}`);
      } else if (end.kind === 'closed') {
        this.report(`watch ${this.o.name} closed by the API server; ${resume}`);
        if (short) await this.sleep(this.backoff.next());
      } else {
        const status = this.refusal(end.err);
        if (status !== undefined) {
          this.refuse(status, 'watch', end.err);
          if (this.o.relistWhenWatchRefused) needList = true;
        } else this.report(`${describeFailure(`watch ${this.o.name}`, this.o.server, end.err, this.rbacHint)}; ${resume}`);
        await this.sleep(this.backoff.next());
      }
    }
  }

  stop() {
    this.stopped = true;
    this.stopping.abort();
    this.abortWatch?.();
    if (this.sleeping) {
      clearTimeout(this.sleeping.timer);
      this.sleeping.wake();
    }
  }

  private report(msg: string) {
    this.o.onError(new Error(msg));
  }

  /** The status of `e` when it is a refusal (refusedOn), else undefined. */
  private refusal(e: unknown): number | undefined {
    const status = statusOf(e);
    return status !== undefined && (status === 401 || (this.o.refusedOn ?? [403]).includes(status)) ? status : undefined;
  }

  /** Refused again: said only when the state begins (or its status changes), not at every retry. */
  private refuse(status: number, verb: 'list' | 'watch', e: unknown) {
    if (this.refused?.status === status) return;
    const r: Refusal = { status, verb, message: serverMessage(e), since: Date.now() };
    this.refused = r;
    const line = describeRefusal(`${verb} ${this.o.name}`, this.path, status, r.message, this.rbacHint);
    if (this.o.onRefused && status !== 401) this.o.onRefused(r, line);
    else this.report(line);
  }

  /** A list or watch was accepted: the refused state, if any, ends. */
  private accepted() {
    const was = this.refused;
    if (!was) return;
    this.refused = null;
    this.o.onAccepted?.(was);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((wake) => {
      const timer = setTimeout(() => {
        this.sleeping = undefined;
        wake();
      }, ms);
      this.sleeping = { timer, wake };
    });
  }

  private watchOnce(): Promise<WatchEnd> {
    return new Promise((resolve) => {
      let events = 0;
      let ended = false;
      let gone = false;
      let failure: unknown;
      let controller: { abort(): void } | undefined;
      let watchdog: NodeJS.Timeout | undefined;
      const finish = (end: WatchEnd) => {
        if (ended) return;
        ended = true;
        clearTimeout(watchdog);
        this.abortWatch = undefined;
        controller?.abort();
        resolve(end);
      };
      const arm = () => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => finish({ kind: 'silent', events }), this.o.watchdogMs);
      };
      this.abortWatch = () => finish({ kind: 'stopped', events });
      arm();
      const onEvent = (type: string, obj: Obj) => {
        if (ended) return;
        arm();
        this.lastEventAt = Date.now();
        const rv = obj?.metadata?.resourceVersion;
        let op: 'set' | 'delete';
        switch (type) {
          case 'ADDED':
          case 'MODIFIED':
            if (this.o.transform) obj = this.o.transform(obj);
            this.store.set(objectKey(obj), obj);
            op = 'set';
            break;
          case 'DELETED':
            this.store.delete(objectKey(obj));
            op = 'delete';
            break;
          case 'BOOKMARK':
            // Only a newer resourceVersion: lets a quiet watch resume without a relist.
            if (rv) this.resourceVersion = String(rv);
            events++; // proof of a healthy stream, though the store is unchanged
            return;
          case 'ERROR':
            if (obj?.code === 410) gone = true;
            else failure = obj;
            return;
          default:
            return;
        }
        events++;
        if (rv) this.resourceVersion = String(rv);
        this.o.onChange(op, objectKey(obj), obj);
      };
      const onDone = (err: unknown) => {
        if (gone) finish({ kind: 'gone', events });
        else if (err || failure) finish({ kind: 'error', events, err: err ?? statusError(failure) });
        else finish({ kind: 'closed', events });
      };
      // Randomised server-side timeout, as client-go does, so watches of many agents do not expire together.
      const timeoutSeconds = Math.round(300 * (1 + Math.random()));
      this.o.watch
        .watch(this.path, { resourceVersion: this.resourceVersion, allowWatchBookmarks: true, fieldSelector: this.o.fieldSelector, timeoutSeconds }, onEvent, onDone, this.stopping.signal)
        .then(
          (c) => {
            controller = c;
            if (ended) return c.abort();
            this.connected = true;
            this.accepted();
            arm(); // silence counts from the open stream; the connect itself was under the same limit

          },
          (err) => finish({ kind: 'error', events, err }),
        );
    });
  }
}

function statusError(s: unknown): Error {
  const o = s as { code?: number; message?: string } | undefined;
  return Object.assign(new Error(o?.message ?? 'watch ERROR event'), { statusCode: o?.code });
}
