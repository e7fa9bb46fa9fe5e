// The kube-proxy stand-in's nftables ruleset for one node (pure): Services and EndpointSlices in,
// `nft -f` text out, laid out as kube-proxy's nftables mode lays out its `ip kube-proxy` table.
// Every ClusterIP:port jumps through a verdict map to its Service's chain, which picks a ready
// endpoint with `numgen random mod N` and DNATs to it; NAT runs for a connection's first packet
// only, so the choice is per connection. Hooked in prerouting (pods' traffic, routed through the
// node) and output (processes in the node namespace). A Service with no ready endpoints is
// rejected (ICMP port unreachable: ECONNREFUSED at once); an allocated ClusterIP on a port it
// does not serve is rejected, an unallocated address of the service CIDR dropped. A pod that
// reaches itself through its Service is masqueraded (hairpin). Headless Services get nothing.
import type { KubeObject } from './api-resources.ts';
import { SERVICE_NAME_LABEL } from './endpointslices.ts';

export const TABLE = 'kube-proxy';
const PROTOCOLS: Record<string, string> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

export interface ServiceTarget {
  /** Chain name suffix: ns/name/proto/port-name-or-number. */
  id: string;
  clusterIP: string;
  protocol: string;
  port: number;
  /** ip:port of each endpoint that may take new connections, sorted. */
  endpoints: { ip: string; port: number }[];
  /** No endpoints: how the connection is refused. */
  noEndpoints: 'reject' | 'drop';
}

/** Which endpoints of a Service port take new connections on `nodeName`, as kube-proxy decides. */
export function serviceTargets(services: Iterable<KubeObject>, slices: Iterable<KubeObject>, nodeName: string): ServiceTarget[] {
  const slicesOf = new Map<string, KubeObject[]>();
  for (const s of slices) {
    const svc = s.metadata.labels?.[SERVICE_NAME_LABEL];
    if (!svc || s.addressType !== 'IPv4') continue;
    const key = `${s.metadata.namespace}/${svc}`;
    slicesOf.set(key, [...(slicesOf.get(key) ?? []), s]);
  }
  const out: ServiceTarget[] = [];
  const sorted = [...services].sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
  for (const svc of sorted) {
    const ip = svc.spec?.clusterIP;
    if (!ip || ip === 'None') continue;
    const local = svc.spec?.internalTrafficPolicy === 'Local';
    for (const sp of svc.spec?.ports ?? []) {
      const proto = PROTOCOLS[sp.protocol ?? 'TCP'];
      if (!proto) continue;
      const name = sp.name ?? '';
      const ready: { ip: string; port: number }[] = [];
      const terminating: { ip: string; port: number }[] = [];
      const seen = new Set<string>();
      for (const slice of slicesOf.get(`${svc.metadata.namespace}/${svc.metadata.name}`) ?? []) {
        const port = (slice.ports ?? []).find((p: any) => (p.name ?? '') === name && (p.protocol ?? 'TCP') === (sp.protocol ?? 'TCP'))?.port;
        if (typeof port !== 'number') continue;
        for (const e of slice.endpoints ?? []) {
          if (local && e.nodeName !== nodeName) continue;
          const c = e.conditions ?? {};
          // An unset ready means ready (the API's rule); serving-and-terminating endpoints are the fallback when none is ready.
          const isReady = c.ready === undefined || c.ready === null || c.ready === true;
          const fallback = !isReady && c.serving === true && c.terminating === true;
          if (!isReady && !fallback) continue;
          for (const addr of e.addresses ?? []) {
            const k = `${addr}:${port}`;
            if (seen.has(k)) continue;
            seen.add(k);
            (isReady ? ready : terminating).push({ ip: addr, port });
          }
        }
      }
      const endpoints = (ready.length ? ready : terminating).sort((a, b) => `${a.ip}:${a.port}`.localeCompare(`${b.ip}:${b.port}`, 'en', { numeric: true }));
      out.push({ id: `${svc.metadata.namespace}/${svc.metadata.name}/${proto}/${name || sp.port}`, clusterIP: ip, protocol: proto, port: sp.port, endpoints, noEndpoints: local ? 'drop' : 'reject' });
    }
  }
  return out;
}

function elements(items: string[]): string {
  return items.length ? `\t\telements = { ${items.join(',\n\t\t\t     ')} }\n` : '';
}

/** The whole table, replaced atomically by one `nft -f` (create, delete, recreate in one transaction). */
export function renderRuleset(targets: ServiceTarget[], serviceCidr: string): string {
  const clusterIPs = [...new Set(targets.map((t) => t.clusterIP))];
  const serving = targets.filter((t) => t.endpoints.length > 0);
  const refused = targets.filter((t) => t.endpoints.length === 0);
  const lines: string[] = [];
  lines.push(`table ip ${TABLE}`, `delete table ip ${TABLE}`, `table ip ${TABLE} {`);
  lines.push(`\tset cluster-ips {\n\t\ttype ipv4_addr\n${elements(clusterIPs)}\t}`);
  lines.push(`\tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n${elements(serving.map((t) => `${t.clusterIP} . ${t.protocol} . ${t.port} : goto service-${t.id}`))}\t}`);
  lines.push(
    `\tmap no-endpoint-services {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n${elements(refused.map((t) => `${t.clusterIP} . ${t.protocol} . ${t.port} : ${t.noEndpoints === 'drop' ? 'drop' : 'goto reject-chain'}`))}\t}`,
  );
  lines.push('\tchain reject-chain {\n\t\treject\n\t}');
  lines.push('\tchain mark-for-masquerade {\n\t\tmeta mark set meta mark or 0x4000\n\t}');
  lines.push('\tchain masquerading {\n\t\tmeta mark & 0x4000 == 0 return\n\t\tmeta mark set meta mark xor 0x4000\n\t\tmasquerade fully-random\n\t}');
  lines.push('\tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}');
  lines.push('\tchain service-endpoints-check {\n\t\tip daddr . meta l4proto . th dport vmap @no-endpoint-services\n\t}');
  lines.push(`\tchain cluster-ips-check {\n\t\tip daddr @cluster-ips reject\n\t\tip daddr ${serviceCidr} drop\n\t}`);
  lines.push('\tchain filter-forward {\n\t\ttype filter hook forward priority -110; policy accept;\n\t\tct state new jump service-endpoints-check\n\t\tct state new jump cluster-ips-check\n\t}');
  lines.push('\tchain filter-output {\n\t\ttype filter hook output priority -110; policy accept;\n\t\tct state new jump service-endpoints-check\n\t}');
  // After NAT output (-100): what is still addressed to a ClusterIP was not DNATed.
  lines.push('\tchain filter-output-post-dnat {\n\t\ttype filter hook output priority -90; policy accept;\n\t\tct state new jump cluster-ips-check\n\t}');
  lines.push('\tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}');
  lines.push('\tchain nat-output {\n\t\ttype nat hook output priority -100; policy accept;\n\t\tjump services\n\t}');
  lines.push('\tchain nat-postrouting {\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\tjump masquerading\n\t}');
  for (const t of serving) {
    const eps = t.endpoints.map((e) => `endpoint-${t.id}__${e.ip}/${e.port}`);
    lines.push(`\tchain service-${t.id} {\n\t\tnumgen random mod ${eps.length} vmap { ${eps.map((c, i) => `${i} : goto ${c}`).join(', ')} }\n\t}`);
    t.endpoints.forEach((e, i) => {
      lines.push(`\tchain ${eps[i]} {\n\t\tip saddr ${e.ip} jump mark-for-masquerade\n\t\tmeta l4proto ${t.protocol} dnat to ${e.ip}:${e.port}\n\t}`);
    });
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}
