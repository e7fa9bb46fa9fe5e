// What a tap may ask for, from the CLI's JSON body or the dashboard's query: one check for both,
// so the page is held to the same bounds as `mesh-agent tap` (--max-rps at most MAX_TAP_RPS, a path
// prefix of at most MAX_TAP_PATH: the agents ignore a longer one, a tap that would never show a request).
import { MAX_TAP_PATH, MAX_TAP_RPS } from '../telemetry/tap.ts';
import type { TapRequest } from './protocol.ts';
import { TapError } from './tap-relay.ts';

/** A TapRequest from untrusted JSON, or a TapError (400) naming the bad field. */
export function checkTapRequest(v: any): TapRequest {
  const bad = (m: string) => new TapError(400, `tap request: ${m}`);
  if (!v || typeof v !== 'object') throw bad('expected a JSON object');
  if (typeof v.resource !== 'string') throw bad('resource: needs TYPE/NAME');
  if (typeof v.namespace !== 'string' || v.namespace === '') throw bad('namespace: needs a string');
  if (v.to !== undefined && typeof v.to !== 'string') throw bad('to: needs TYPE/NAME');
  if (v.toNamespace !== undefined && typeof v.toNamespace !== 'string') throw bad('toNamespace: needs a string');
  if (v.method !== undefined && (typeof v.method !== 'string' || !/^[A-Za-z]{1,32}$/.test(v.method))) throw bad('method: needs an HTTP method such as GET');
  if (v.path !== undefined && (typeof v.path !== 'string' || !v.path.startsWith('/'))) throw bad('path: needs a prefix starting with /');
  if (v.path !== undefined && v.path.length > MAX_TAP_PATH) throw bad(`path: at most ${MAX_TAP_PATH} characters (got ${v.path.length}); the agents match a shorter prefix only`);
  if (typeof v.maxRps !== 'number' || !(v.maxRps > 0) || v.maxRps > MAX_TAP_RPS) throw bad(`maxRps: needs a number in (0, ${MAX_TAP_RPS}]`);
  return { resource: v.resource, namespace: v.namespace, to: v.to, toNamespace: v.toNamespace, method: v.method?.toUpperCase(), path: v.path, maxRps: v.maxRps };
}
