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
import { LastGoodRecords, type AccessSink, type AccessState } from './last-good.ts';
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

export type { AccessSink, AccessState } from './last-good.ts';

export class AccessIndex {
  private readonly objects: KindStore<SmiAccessKind>;
  /** Linkerd's Servers and what applies to them. */
  readonly linkerd: LinkerdIndex;
  /** Each TrafficTarget's record on the agents (its last good version when an edit breaks it). */
  private readonly records: LastGoodRecords<AccessRecord>;
  /** "HTTPRouteGroup/ns/name" -> the TrafficTargets that read it. */
  private readonly dependents = new Dependents();
  private readonly holding = new HeldConversions();

  constructor(o: { sink: AccessSink; log: (level: 'info' | 'warn', msg: string) => void }) {
    const logged = new ChangeLog((msg) => o.log('warn', `policy: ${msg}`));
    this.records = new LastGoodRecords<AccessRecord>(o.sink, logged, accessKey);
    this.objects = new KindStore({ kindOf: smiKind, versions: ACCESS_API_VERSIONS, logged, changed: (kind, key) => this.touched(kind, key) });
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
    const all = this.records.states();
    return { trafficTargets: all.length, serving: this.records.serving, notAccepted: all.filter((s) => !s.accepted).slice(0, 50), linkerd: this.linkerd.state() };
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
    this.records.publish(key, conv.record, conv.problems, `no version of it was ever accepted, so ServiceAccount ${o?.spec?.destination?.namespace ?? objectName(o).namespace}/${o?.spec?.destination?.name ?? '?'} is governed by its default policy until it is fixed`);
  }

  private forget(key: string): void {
    this.records.forget(key);
    this.dependents.track(key, []);
  }
}

const isSmi = (k: AccessObjectKind): k is SmiAccessKind => k === 'TrafficTarget' || k === 'HTTPRouteGroup' || k === 'TCPRoute';
