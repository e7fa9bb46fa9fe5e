// What makes a node's agent degraded, from its status document. Pure: `status` and /ready use it.

export interface Health {
  healthy: boolean;
  reasons: string[];
}

/** Map usage above this share of capacity is a warning: new pods or connections may not fit. */
export const MAP_PRESSURE = 0.9;

export function assessHealth(s: any): Health {
  const reasons: string[] = [];
  for (const f of s.features ?? []) {
    if (f.required && f.status === 'missing') reasons.push(`BPF feature missing: ${f.kind} ${f.name} (${f.note}); fix: ${f.fix}`);
  }
  const progs: any[] = s.datapath?.programs ?? [];
  const detached = progs.filter((p) => !p.attachedTo).map((p) => p.section);
  if (progs.length === 0) reasons.push('the datapath is not loaded');
  else if (detached.length) reasons.push(`programs not attached: ${detached.join(', ')}`);
  for (const m of s.datapath?.maps ?? []) {
    if (m.type.includes('array')) continue;
    if (m.used >= m.maxEntries * MAP_PRESSURE) reasons.push(`map ${m.name} is ${Math.round((100 * m.used) / m.maxEntries)}% full (${m.used}/${m.maxEntries})`);
  }
  if (BigInt(s.datapath?.counters?.mapFull ?? 0) > 0n) reasons.push(`${s.datapath.counters.mapFull} connections not redirected because a map was full`);
  for (const w of s.proxy?.workers ?? []) {
    if (w.state !== 'running') reasons.push(`proxy worker ${w.index} is ${w.state} (${w.restarts} restarts, ${w.stuck} of them stuck); the other proxies serve meanwhile; see the agent log for why it exited`);
  }
  for (const p of s.pods ?? []) {
    const who = `pod ${p.namespace}/${p.name}`;
    if (!p.meshed && p.reason && !['not-injected', 'host-network', 'not-running'].includes(p.reason)) reasons.push(`${who} is not meshed: ${p.reason}`);
    for (const e of p.annotationErrors ?? []) reasons.push(`${who}: invalid annotation ${e}`);
  }
  reasons.push(...discoveryHealth(s.discovery));
  reasons.push(...identityHealth(s.identity));
  reasons.push(...inboundHealth(s.inbound));
  return { healthy: reasons.length === 0, reasons };
}

/**
 * Identity's part (docs/identity.md): a certificate that could not be had (its pods' connections
 * to other nodes are refused), one whose renewal fails (it serves until it expires: the time
 * left is what matters), certificates cut to the end of an issuer that must be rotated (one line
 * per issuer end, however many certificates), and trust anchors that end within 30 days.
 */
export function identityHealth(id: any): string[] {
  if (!id) return [];
  const out: string[] = [];
  for (const c of id.certificates ?? []) {
    if (c.state === 'failing') out.push(`identity: no certificate for ${c.identity} (${c.failures} attempts failed: ${c.lastError}); its pods' connections to meshed pods of other nodes are refused until the identity service ${id.identityService} answers; next attempt ${c.nextRenewal}`);
    else if (c.state === 'ready' && c.failures > 0) out.push(`identity: renewing ${c.identity} failed ${c.failures} times (${c.lastError}); its certificate serves ${c.remainingSeconds}s more (until ${c.notAfter}); next attempt ${c.nextRenewal}`);
  }
  const issuerEnds = new Map<string, number>();
  for (const c of id.certificates ?? []) if (c.cutByIssuer && c.issuerNotAfter) issuerEnds.set(c.issuerNotAfter, c.remainingSeconds ?? 0);
  // The service cuts to its issuer's end or its anchor's, whichever is sooner: name the one to rotate.
  const said = new Set<unknown>();
  for (const [end, left] of issuerEnds) {
    const a = (id.trustAnchors ?? []).find((x: any) => Math.abs(Date.parse(x.notAfter) - Date.parse(end)) < 1000);
    if (a) said.add(a);
    out.push(a
      ? `identity: the trust anchor ${a.subject} ends at ${end} (in ${left} s): certificates are cut to its end; rotate the trust anchor now (docs/identity.md, rotating the trust anchor)`
      : `identity: the identity service's issuer ends at ${end} (in ${left} s): certificates are cut to its end; rotate the issuer now (docs/identity.md, rotating the issuer)`);
  }
  for (const a of id.trustAnchors ?? []) if (a.warning && !said.has(a)) out.push(`identity: ${a.warning}`);
  return out;
}

/**
 * The discovery link's part: configured but never synced, down longer than its staleAfterMs, or
 * holding routes this agent could not read (each fails closed until agent and controller agree).
 * A controller without discovery (not-served) is a choice, not a fault: Services go to their
 * original destination, as without --controller.
 */
export function discoveryHealth(d: any): string[] {
  if (!d || d.state === 'not-served' || d.state === 'stopped') return [];
  const why = d.lastError ? `: ${d.lastError}` : '';
  if (!d.everSynced) return [`discovery: no cluster state from the controller ${d.url} yet (${d.state}${why}); Services go to their original destination until it comes`];
  const out: string[] = [];
  if (d.downForMs > d.staleAfterMs) out.push(`discovery: the link to ${d.url} has been down ${Math.round(d.downForMs / 1000)}s (${d.state}${why}); routing from the state of ${d.lastUpdateAt}`);
  if (d.failedClosed > 0) out.push(`discovery: ${d.failedClosed} route${d.failedClosed === 1 ? '' : 's'} from the controller this agent cannot read, failing closed (their requests answer 500; the reason is in RECENT ERRORS and \`mesh-agent diagnostics policy\`); run agents and the controller of the same release`);
  return out;
}

/**
 * The inbound side: a capture that cannot be applied (a kernel without nftables TPROXY, no
 * CAP_NET_ADMIN) leaves restrictive policies unenforced for clients that do not come through
 * the agent: named pod by pod. A TrafficTarget the controller could not convert again is
 * enforced in its last good version: said too.
 */
export function inboundHealth(i: any): string[] {
  if (!i || i.capture === 'off') return [];
  const out: string[] = [];
  const restrictive = (i.pods ?? []).filter((p: any) => p.failsClosed).map((p: any) => `${p.namespace}/${p.name}`);
  if (i.error) out.push(`inbound capture failed: ${i.error}; ${restrictive.length ? `the policies of ${restrictive.join(', ')} are not enforced for clients outside this node's mesh` : 'connections from outside the mesh are not counted'}`);
  for (const p of i.pods ?? []) for (const pr of p.problems ?? []) out.push(`pod ${p.namespace}/${p.name}: ${pr}`);
  return out;
}
