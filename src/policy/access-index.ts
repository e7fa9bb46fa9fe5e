// The controller's SMI access control: TrafficTarget, HTTPRouteGroup and TCPRoute objects from the
// cluster or --resources files, each TrafficTarget converted (smi-access.ts) into the access
// record the discovery hub streams to the agents. A TrafficTarget is converted again when a route
// object it reads changes. One whose new version does not convert keeps its last good record on
// the agents, sent again with the reason attached (the destination's agents show it in their
// status); one that never converted sends nothing, and the agents of its destination know
// nothing of it: its ServiceAccount keeps its default policy, which the controller's log and
// status say. Never an allow-all in its place. Linkerd's policy kinds go to the LinkerdIndex it
// holds (linkerd-index.ts), whose Server records share the sink.
import { KindStore, objKey } from '../k8s/kind-store.ts';
import { objectName } from '../k8s/objects.ts';
import { ChangeLog } from '../util/change-log.ts';
import { Dependents } from '../util/dependents.ts';
import { HeldConversions } from '../util/held-conversions.ts';
import { accessFromTrafficTarget, type AccessConversion } from './smi-access.ts';
import { LinkerdIndex, linkerdObjectKind } from './linkerd-index.ts';
import type { LinkerdKind } from './linkerd-policy.ts';
import { accessKey, SMI_SPECS_VERSION, TRAFFIC_TARGET_VERSION, type AccessRecord } from './model.ts';

type Obj = Record<string, any>;

export type SmiAccessKind = 'TrafficTarget' | 'HTTPRouteGroup' | 'TCPRoute';
/** The kinds whose objects restrict who may connect: SMI's, and Linkerd's (HTTPRoute is a route kind too). */
export type AccessObjectKind = SmiAccessKind | LinkerdKind;

/** apiVersions read per kind (others are refused with a message naming the one to use). */
export const ACCESS_API_VERSIONS: Record<SmiAccessKind, string[]> = {
  TrafficTarget: [TRAFFIC_TARGET_VERSION],
  HTTPRouteGroup: [SMI_SPECS_VERSION],
  TCPRoute: [SMI_SPECS_VERSION],
};

function smiKind(o: Obj): SmiAccessKind | null {
  const k = o?.kind;
  return k === 'TrafficTarget' || k === 'HTTPRouteGroup' || k === 'TCPRoute' ? k : null;
}

export function accessObjectKind(o: Obj): AccessObjectKind | null {
  return smiKind(o) ?? linkerdObjectKind(o);
}

export interface AccessSink {
  put(key: string, line: string): void;
  remove(key: string): void;
}

export interface AccessState {
  key: string;
  accepted: boolean;
  /** The agents enforce a record of it (this version's, or the last good one). */
  serving: boolean;
  problems: string[];
}

export class AccessIndex {
  private readonly sink: AccessSink;
  private readonly objects: KindStore<SmiAccessKind>;
  /** Linkerd's Servers and what applies to them. */
  readonly linkerd: LinkerdIndex;
  private readonly good = new Map<string, AccessRecord>();
  private readonly sent = new Map<string, string>();
  private readonly states = new Map<string, AccessState>();
  /** Each object's problems, logged when they change. */
  private readonly logged: ChangeLog;
  /** "HTTPRouteGroup/ns/name" -> the TrafficTargets that read it. */
  private readonly dependents = new Dependents();
  private readonly holding = new HeldConversions();

  constructor(o: { sink: AccessSink; log: (level: 'info' | 'warn', msg: string) => void }) {
    this.sink = o.sink;
    this.logged = new ChangeLog((msg) => o.log('warn', `policy: ${msg}`));
    this.objects = new KindStore({ kindOf: smiKind, versions: ACCESS_API_VERSIONS, logged: this.logged, changed: (kind, key) => this.touched(kind, key) });
    this.linkerd = new LinkerdIndex(o);
  }

  /** While held (a source still listing), conversions wait: a TrafficTarget listed before its HTTPRouteGroup is not "not found". */
  hold(): void {
    this.holding.hold();
    this.linkerd.hold();
  }

  release(): void {
    this.holding.release((k) => this.convert(k));
    this.linkerd.release();
  }

  /** An object added or changed; false (and said once) for a kind or apiVersion not read. */
  upsert(o: Obj): boolean {
    const smi = smiKind(o) !== null && this.objects.upsert(o);
    const linkerd = linkerdObjectKind(o) !== null && this.linkerd.upsert(o);
    return smi || linkerd;
  }

  /** `group`: the object's API group (HTTPRoute is served by two). */
  remove(kind: AccessObjectKind, namespace: string, name: string, group?: string): void {
    if (isSmi(kind)) this.objects.remove(kind, namespace, name);
    else this.linkerd.remove(kind, namespace, name, group);
  }

  replaceAll(kind: AccessObjectKind, objs: Iterable<Obj>, group?: string): void {
    if (isSmi(kind)) this.objects.replaceAll(kind, objs);
    else this.linkerd.replaceAll(kind, objs, group);
  }

  state(): { trafficTargets: number; serving: number; notAccepted: AccessState[]; linkerd: ReturnType<LinkerdIndex['state']> } {
    const all = [...this.states.values()];
    return { trafficTargets: all.length, serving: this.good.size, notAccepted: all.filter((s) => !s.accepted).slice(0, 50), linkerd: this.linkerd.state() };
  }

  private touched(kind: SmiAccessKind, key: string): void {
    if (kind === 'TrafficTarget') {
      this.convert(key);
      return;
    }
    if (this.holding.held) {
      this.holding.deferPrefixed(this.objects.keys(), `TrafficTarget/${key.split('/')[1]}/`);
      return;
    }
    for (const k of this.dependents.readersOf(key)) this.convert(k);
  }

  private convert(key: string): void {
    if (this.holding.defer(key)) return;
    const o = this.objects.get(key);
    if (o === undefined) {
      this.forget(key);
      return;
    }
    const conv: AccessConversion = accessFromTrafficTarget(o, (kind, ns, name) => this.objects.get(objKey(kind, ns, name)));
    this.dependents.track(key, conv.reads);
    const problems = [...conv.problems];
    let record: AccessRecord | undefined;
    if (conv.record !== null) {
      record = conv.record;
      this.good.set(key, record);
    } else {
      record = this.good.get(key);
      if (record !== undefined) {
        problems.push(`${key}: the agents keep enforcing its last good version`);
        record = { ...record, problems: problems.map((p) => p.slice(0, 2048)).slice(0, 16) };
      } else {
        problems.push(`${key}: no version of it was ever accepted, so ServiceAccount ${o?.spec?.destination?.namespace ?? objectName(o).namespace}/${o?.spec?.destination?.name ?? '?'} is governed by its default policy until it is fixed`);
      }
    }
    if (record !== undefined) {
      const line = JSON.stringify({ type: 'access', op: 'set', access: record });
      if (this.sent.get(key) !== line) {
        this.sent.set(key, line);
        this.sink.put(accessKey(record), line);
      }
    }
    this.states.set(key, { key, accepted: conv.record !== null, serving: this.good.has(key), problems });
    this.logged.problems(key, problems);
  }

  private forget(key: string): void {
    this.good.delete(key);
    this.states.delete(key);
    this.logged.forget(key);
    this.dependents.track(key, []);
    if (this.sent.delete(key)) this.sink.remove(key);
  }

}

const isSmi = (k: AccessObjectKind): k is SmiAccessKind => k === 'TrafficTarget' || k === 'HTTPRouteGroup' || k === 'TCPRoute';
