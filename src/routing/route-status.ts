// Writes the routes' status back through the API server's status subresource, as users read it
// with `kubectl get httproute -o yaml`. Gateway API routes: our entries of status.parents
// (controllerName mesh-agent.io/mesh-controller), other controllers' entries kept as they are;
// a TrafficSplit: status.conditions. A condition keeps its lastTransitionTime while its status
// stays. Writes are read-modify-write with the object's resourceVersion; a conflict (409) reads
// again and retries, a failure is logged and retried with a backoff, one write per object at a
// time, the latest wanted status winning.
import { isDeepStrictEqual } from 'node:util';
import type { DesiredStatus } from './route-index.ts';
import { CONTROLLER_NAME, GATEWAY_GROUP, type Condition } from './gateway-api.ts';
import { SMI_SPLIT_GROUP } from './smi.ts';

type Obj = Record<string, any>;

export const ROUTE_PLURALS: Record<DesiredStatus['kind'], { group: string; version: string; plural: string }> = {
  HTTPRoute: { group: GATEWAY_GROUP, version: 'v1', plural: 'httproutes' },
  GRPCRoute: { group: GATEWAY_GROUP, version: 'v1', plural: 'grpcroutes' },
  TrafficSplit: { group: SMI_SPLIT_GROUP, version: 'v1alpha4', plural: 'trafficsplits' },
};

/** What the API server is asked: get an object, replace its status (throwing with .code on HTTP errors). */
export interface StatusApi {
  get(kind: DesiredStatus['kind'], namespace: string, name: string): Promise<Obj>;
  replaceStatus(kind: DesiredStatus['kind'], namespace: string, name: string, body: Obj): Promise<Obj>;
}

type K8sCondition = Condition & { lastTransitionTime: string; observedGeneration: number };

/** A list the object should hold; anything else (hand-edited, another controller's bug) as none: the index reads statuses too, and must not throw. */
const list = (x: unknown): Obj[] => (Array.isArray(x) ? x : []);

function stamp(want: Condition[], have: unknown, generation: number, now: string): K8sCondition[] {
  return want.map((c) => {
    const prev = list(have).find((h) => h?.type === c.type);
    return { ...c, observedGeneration: generation, lastTransitionTime: prev?.status === c.status && typeof prev.lastTransitionTime === 'string' ? prev.lastTransitionTime : now };
  });
}

const sameParent = (a: Obj, b: Obj) => (a?.name ?? '') === (b?.name ?? '') && (a?.namespace ?? '') === (b?.namespace ?? '') && (a?.port ?? '') === (b?.port ?? '') && (a?.kind ?? '') === (b?.kind ?? '');

/**
 * The status an object should have, from what it has and what we want; null when it already has
 * it (no write). Pure.
 */
export function mergedStatus(obj: Obj, want: DesiredStatus, now: string): Obj | null {
  const have: Obj = obj?.status !== null && typeof obj?.status === 'object' ? obj.status : {};
  if (want.conditions !== undefined) {
    const conditions = stamp(want.conditions, have.conditions, want.generation, now);
    const next = { ...have, conditions };
    return same(have.conditions, conditions) ? null : next;
  }
  const others: Obj[] = list(have.parents).filter((p: Obj) => p?.controllerName !== CONTROLLER_NAME);
  const ours: Obj[] = list(have.parents).filter((p: Obj) => p?.controllerName === CONTROLLER_NAME);
  const mine = want.parents!.map((p) => {
    const prev = ours.find((h) => sameParent(h.parentRef, p.parentRef));
    return { parentRef: p.parentRef, controllerName: CONTROLLER_NAME, conditions: stamp(p.conditions, prev?.conditions, want.generation, now) };
  });
  const parents = [...others, ...mine];
  return same(have.parents, parents) ? null : { ...have, parents };
}

/** Whether the object as seen already has this status: nothing to write. */
export const showsStatus = (obj: Obj, want: DesiredStatus): boolean => mergedStatus(obj, want, '') === null;

// As JSON values, not JSON text: the API server gives a custom object's fields back in its own key order (Go's, sorted).
function same(a: unknown, b: unknown): boolean {
  const json = (x: unknown): unknown => JSON.parse(JSON.stringify(x ?? null));
  return isDeepStrictEqual(json(a), json(b));
}

export class RouteStatusWriter {
  private readonly api: StatusApi;
  private readonly log: (level: 'info' | 'warn', msg: string) => void;
  /** Per object: the latest wanted status, and whether a write is running. */
  private readonly pending = new Map<string, DesiredStatus>();
  private readonly running = new Set<string>();
  private stopped = false;
  writes = 0;
  failures = 0;

  constructor(api: StatusApi, log: RouteStatusWriter['log']) {
    this.api = api;
    this.log = log;
  }

  /** Wants this status on the object; `known` is the object as last seen (saves a read when current). */
  write(want: DesiredStatus, known?: Obj): void {
    const key = `${want.kind}/${want.namespace}/${want.name}`;
    this.pending.set(key, want);
    if (!this.running.has(key)) void this.run(key, known);
  }

  stop(): void {
    this.stopped = true;
  }

  private async run(key: string, known: Obj | undefined): Promise<void> {
    this.running.add(key);
    let obj = known;
    let attempt = 0;
    try {
      while (!this.stopped) {
        const want = this.pending.get(key);
        if (want === undefined) return;
        this.pending.delete(key);
        try {
          obj ??= await this.api.get(want.kind, want.namespace, want.name);
          const status = mergedStatus(obj, want, new Date().toISOString().replace(/\.\d{3}Z$/, 'Z'));
          if (status === null) continue;
          obj = await this.api.replaceStatus(want.kind, want.namespace, want.name, { ...obj, status });
          this.writes++;
          attempt = 0;
        } catch (e) {
          const code = (e as { code?: number }).code;
          if (code === 404) return; // deleted meanwhile: nothing to write to
          obj = undefined; // read it again: a conflict means someone else wrote first
          if (!this.pending.has(key)) this.pending.set(key, want);
          if (code !== 409) {
            this.failures++;
            this.log('warn', `routes: writing the status of ${want.kind} ${want.namespace}/${want.name} failed (${code !== undefined ? `HTTP ${code}` : (e as Error).message}); retrying${code === 403 ? "; the controller's ClusterRole needs update on httproutes/status, grpcroutes/status and trafficsplits/status (mesh-agent install)" : ''}`);
            await new Promise((r) => setTimeout(r, Math.min(30_000, 500 * 2 ** attempt++)));
          }
        }
      }
    } finally {
      this.running.delete(key);
    }
  }
}
