// The controller's Linkerd policy resources: Server, AuthorizationPolicy, ServerAuthorization, MeshTLSAuthentication,
// NetworkAuthentication and HTTPRoute objects from the cluster or --resources files, each Server
// converted (linkerd-policy.ts) with everything that applies to it into the record the discovery
// hub streams to the agents (as an access record keyed "Server/ns/name"). Any change of a
// policy object converts again the Servers it may apply to (its namespace's; every Server for an
// authentication, which another namespace's policy may name). A Server whose new version does
// not convert keeps its last good record on the agents, sent again with the reason; one that
// never converted sends nothing: the pods it would select keep their default policy on that
// port, which the controller's log and status say (as for a TrafficTarget).
import { KindStore, objKey } from '../k8s/kind-store.ts';
import { ChangeLog } from '../util/change-log.ts';
import { HeldConversions } from '../util/held-conversions.ts';
import { serverFromLinkerd, type LinkerdKind, type LinkerdLookup } from './linkerd-policy.ts';
import { LINKERD_V1ALPHA1, LINKERD_V1BETA1, SERVER_VERSIONS, serverKey, type ServerRecord } from './server-model.ts';
import { LastGoodRecords, type AccessSink, type AccessState } from './last-good.ts';

type Obj = Record<string, any>;

export const LINKERD_API_VERSIONS: Record<LinkerdKind, string[]> = {
  Server: SERVER_VERSIONS,
  AuthorizationPolicy: [LINKERD_V1ALPHA1],
  ServerAuthorization: [LINKERD_V1BETA1],
  MeshTLSAuthentication: [LINKERD_V1ALPHA1],
  NetworkAuthentication: [LINKERD_V1ALPHA1],
  // Linkerd reads both groups' HTTPRoutes for Server parents; both are listed (policy.linkerd.io's at v1beta3).
  HTTPRoute: ['gateway.networking.k8s.io/v1', 'gateway.networking.k8s.io/v1beta1', 'policy.linkerd.io/v1beta1', 'policy.linkerd.io/v1beta2', 'policy.linkerd.io/v1beta3'],
};

const KINDS = new Set<string>(Object.keys(LINKERD_API_VERSIONS));

/** Linkerd's policy kinds (an HTTPRoute counts: the route index reads it too). */
export function linkerdObjectKind(o: Obj): LinkerdKind | null {
  const k = o?.kind;
  if (!KINDS.has(k)) return null;
  if (k !== 'HTTPRoute') {
    return typeof o?.apiVersion === 'string' && o.apiVersion.startsWith('policy.linkerd.io/') ? k : null;
  }
  return k as LinkerdKind;
}

export class LinkerdIndex {
  private readonly objects: KindStore<LinkerdKind>;
  /** Each Server's record on the agents (its last good version when an edit breaks it). */
  private readonly records: LastGoodRecords<ServerRecord>;
  private readonly holding = new HeldConversions();
  private readonly lookup: LinkerdLookup;

  constructor(o: { sink: AccessSink; log: (level: 'info' | 'warn', msg: string) => void }) {
    const logged = new ChangeLog((msg) => o.log('warn', `policy: ${msg}`));
    this.records = new LastGoodRecords<ServerRecord>(o.sink, logged, serverKey);
    this.objects = new KindStore({
      kindOf: linkerdObjectKind,
      versions: LINKERD_API_VERSIONS,
      logged,
      changed: (kind, key) => this.touched(kind, key),
      // Gateway API's and Linkerd's HTTPRoute of one name are two routes (keys end with the group).
      groupKeyed: (kind) => kind === 'HTTPRoute',
    });
    this.lookup = {
      get: (kind, ns, name, group) => this.objects.get(objKey(kind, ns, name, kind === 'HTTPRoute' ? group : undefined)),
      list: (kind, ns) => {
        const out: Obj[] = [];
        const prefix = `${kind}/${ns}/`;
        for (const k of this.objects.keys()) if (k.startsWith(prefix)) out.push(this.objects.get(k)!);
        return out;
      },
    };
  }

  hold(): void {
    this.holding.hold();
  }

  release(): void {
    this.holding.release((k) => this.convert(k));
  }

  upsert(o: Obj): boolean {
    return this.objects.upsert(o);
  }

  /** `group`: the object's API group (an HTTPRoute's: two groups serve the kind). */
  remove(kind: LinkerdKind, namespace: string, name: string, group?: string): void {
    this.objects.remove(kind, namespace, name, group);
  }

  replaceAll(kind: LinkerdKind, objs: Iterable<Obj>, group?: string): void {
    this.objects.replaceAll(kind, objs, group);
  }

  state(): { servers: number; serving: number; notAccepted: AccessState[]; ignored: AccessState[] } {
    const all = this.records.states();
    return {
      servers: all.length,
      serving: this.records.serving,
      notAccepted: all.filter((s) => !s.accepted).slice(0, 50),
      ignored: all.filter((s) => s.accepted && s.problems.length > 0).slice(0, 50),
    };
  }

  private touched(kind: LinkerdKind, key: string): void {
    if (kind === 'Server') {
      this.convert(key);
      return;
    }
    const ns = key.split('/')[1];
    const everywhere = kind === 'MeshTLSAuthentication' || kind === 'NetworkAuthentication';
    const servers = [...this.objects.keys(), ...this.records.states().map((st) => st.key)].filter((k) => k.startsWith(everywhere ? 'Server/' : `Server/${ns}/`));
    for (const k of new Set(servers)) this.convert(k);
  }

  private convert(key: string): void {
    if (this.holding.defer(key)) return;
    const o = this.objects.get(key);
    if (o === undefined) {
      this.forget(key);
      return;
    }
    const conv = serverFromLinkerd(o, this.lookup);
    this.records.publish(key, conv.record, conv.problems, 'no version of it was ever accepted, so the pods it would select keep their default policy on its port until it is fixed');
  }

  private forget(key: string): void {
    this.records.forget(key);
  }
}
