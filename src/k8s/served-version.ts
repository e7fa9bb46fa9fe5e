// A kind whose CRD serves different versions by release (Linkerd's Server: v1beta3 since 2.16,
// v1beta1 and v1beta2 before): listed at the newest version the API server serves. A 404 on one
// version says only that this version is not served; a 404 on every version is the kind's (no CRD).
import { statusOf } from './watch-errors.ts';

/** Lists at each version in turn (newest first) until one is served; throws the first 404 when none is, any other error at once. */
export async function listFirstServed<T>(versions: readonly string[], list: (version: string) => Promise<T>): Promise<{ version: string; result: T }> {
  if (versions.length === 0) throw new Error('listFirstServed: no versions to try');
  let notServed: unknown;
  for (const version of versions) {
    try {
      return { version, result: await list(version) };
    } catch (e) {
      if (statusOf(e) !== 404) throw e;
      notServed ??= e;
    }
  }
  throw notServed;
}
