// The node's CNI configuration as the runtime reads it (the lexicographically first .conflist,
// .conf or .json file of its directory, as libcni picks) and our entry chained at the end of its
// plugins, as istio-cni and linkerd-cni add theirs. Pure: the install container and the
// simulated node's install do the file I/O.
import { PLUGIN_TYPE } from './spec.ts';

export interface ConfList {
  cniVersion: string;
  name: string;
  plugins: Array<Record<string, unknown>>;
  [k: string]: unknown;
}

const CONF_FILE = /\.(conflist|conf|json)$/;

/** The file the runtime uses: the first by name of those it reads. */
export function pickConfFile(names: readonly string[]): string | null {
  return [...names].filter((n) => CONF_FILE.test(n) && !n.startsWith('.')).sort()[0] ?? null;
}

/** A .conflist, or a single plugin's .conf made into one (the runtime reads both). */
export function parseConfList(text: string, file: string): ConfList {
  let o: any;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file} is not JSON: ${(e as Error).message}; fix the node's CNI configuration (the network plugin's installer writes it)`);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new Error(`${file} is not a JSON object`);
  if (Array.isArray(o.plugins)) {
    if (!o.plugins.every((p: unknown) => typeof p === 'object' && p !== null && typeof (p as any).type === 'string')) throw new Error(`${file}: every entry of plugins needs a type`);
    return { ...o, cniVersion: String(o.cniVersion ?? '0.3.1'), name: String(o.name ?? ''), plugins: o.plugins };
  }
  if (typeof o.type !== 'string') throw new Error(`${file} has neither plugins nor a type: not a CNI configuration`);
  const { cniVersion, name, ...plugin } = o;
  return { cniVersion: String(cniVersion ?? '0.3.1'), name: String(name ?? ''), plugins: [plugin] };
}

/** The list with our entry last (an older one of ours replaced). */
export function chainPlugin(list: ConfList, entry: Record<string, unknown>): ConfList {
  return { ...list, plugins: [...list.plugins.filter((p) => p.type !== PLUGIN_TYPE), { ...entry, type: PLUGIN_TYPE }] };
}

/** The list without our entry (uninstall). */
export function unchainPlugin(list: ConfList): ConfList {
  return { ...list, plugins: list.plugins.filter((p) => p.type !== PLUGIN_TYPE) };
}

export function hasPlugin(list: ConfList): boolean {
  return list.plugins.some((p) => p.type === PLUGIN_TYPE);
}

export function renderConfList(list: ConfList): string {
  return JSON.stringify(list, null, 2) + '\n';
}

/** Where a chained list goes: a single plugin's .conf becomes a .conflist of the same name (the old file is removed). */
export function conflistName(file: string): string {
  return file.replace(/\.(conf|json)$/, '.conflist');
}
