// Gateway API's RequestHeaderModifier and ResponseHeaderModifier, compiled once per rule for the
// forwarders: the names whose fields the message loses (remove's and set's), then set's and add's
// fields. Order as Envoy applies it: remove first, then set, then add, so a header both removed
// and set is set. The HTTP/1 forwarder rewrites the head with it (http1/hop.ts modifiedHead: the
// request head of each attempt, the response head the client gets), the HTTP/2 one the header
// object (applyToH2: each attempt's request headers, the response headers); rules without the
// filters have none, and their requests pay nothing. A backendRef's modifier is compiled together
// with its rule's (request: the rule's then the backend's; response: the backend's then the
// rule's), so an attempt applies one modifier whichever levels have one.
import type { OutgoingHttpHeaders } from 'node:http2';
import type { HeaderModifier } from './route-model.ts';

export class CompiledHeaderModifier {
  /** As the route gave it (diagnostics policy shows it). */
  readonly spec: HeaderModifier;
  /** Lower-case names whose fields are dropped. */
  readonly drop: ReadonlySet<string>;
  readonly set: ReadonlyArray<{ name: string; value: string }>;
  readonly add: ReadonlyArray<{ name: string; value: string }>;
  /** set's and add's fields as HTTP/1 field lines ("name: value\r\n" each), appended to the head. */
  readonly http1Lines: Buffer;

  constructor(m: HeaderModifier, then?: HeaderModifier) {
    this.spec = m;
    let set = m.set ?? [];
    let add = m.add ?? [];
    const drop = new Set([...(m.remove ?? []), ...set.map((h) => h.name)]);
    let lines = [...set, ...add];
    if (then !== undefined) {
      // `m` then `then`, as one modifier (so an attempt rewrites its head once): what `then`
      // removes or sets loses `m`'s fields for it, and `then`'s set and add go after `m`'s.
      const thenSet = then.set ?? [];
      const lost = new Set([...(then.remove ?? []), ...thenSet.map((h) => h.name)]);
      const kept = (h: { name: string }) => !lost.has(h.name);
      lines = [...lines.filter(kept), ...thenSet, ...(then.add ?? [])];
      set = [...set.filter(kept), ...thenSet];
      add = [...add.filter(kept), ...(then.add ?? [])];
      for (const n of lost) drop.add(n);
    }
    this.set = set;
    this.add = add;
    this.drop = drop;
    // The field lines in the order the edits make them (set's and add's of one name keep theirs).
    this.http1Lines = Buffer.from(lines.map((h) => `${h.name}: ${h.value}\r\n`).join(''), 'latin1');
  }

  /** Edits a header object in place: an attempt's request headers or the response's (copies the forwarder made). */
  applyToH2(out: OutgoingHttpHeaders): void {
    for (const name of this.drop) delete out[name];
    for (const h of this.set) out[h.name] = h.value;
    for (const h of this.add) {
      const v = out[h.name];
      out[h.name] = v === undefined ? h.value : Array.isArray(v) ? [...v, h.value] : [String(v), h.value];
    }
  }
}
