// The agent's record on the node of what it meshes, which the plugin reads when the agent does
// not answer (not yet started, restarting, after a reboot): it lives on a hostPath, so it
// survives the agent and the node. Pure, but for the two small file functions at the end.
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface CniState {
  version: 1;
  node: string;
  /** Namespaces whose pods are meshed (mesh-agent.io/inject: enabled on the namespace). */
  meshedNamespaces: string[];
}

export type StateRead = { kind: 'ok'; state: CniState } | { kind: 'missing' } | { kind: 'invalid'; error: string };

export function renderState(s: CniState): string {
  return JSON.stringify({ version: s.version, node: s.node, meshedNamespaces: [...s.meshedNamespaces].sort() }) + '\n';
}

export function parseState(text: string): CniState {
  let o: any;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${(e as Error).message}`);
  }
  if (o?.version !== 1) throw new Error(`version ${JSON.stringify(o?.version)} is not 1`);
  if (typeof o.node !== 'string') throw new Error('node is not a string');
  if (!Array.isArray(o.meshedNamespaces) || !o.meshedNamespaces.every((n: unknown) => typeof n === 'string')) throw new Error('meshedNamespaces is not a list of names');
  return { version: 1, node: o.node, meshedNamespaces: o.meshedNamespaces };
}

export function readState(file: string): StateRead {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'invalid', error: (e as Error).message };
  }
  try {
    return { kind: 'ok', state: parseState(text) };
  } catch (e) {
    return { kind: 'invalid', error: (e as Error).message };
  }
}

/** Replaces the file whole (a plugin reading it meanwhile sees the old or the new one, never half). */
export function writeState(file: string, s: CniState): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, renderState(s));
  fs.renameSync(tmp, file);
}
