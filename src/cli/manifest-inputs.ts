// Where `inject` reads manifests from, as `linkerd inject` and `kubectl apply -f` take them: a
// file, `-` for stdin, a directory (its .yaml, .yml and .json files, recursively, in name order)
// or an http(s) URL. Each input keeps its own name, so an error still says FILE:LINE.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { httpGet } from '../util/http-get.ts';
import * as path from 'node:path';

export interface ManifestInput {
  /** What errors and the summary call it: the path, the URL or <stdin>. */
  source: string;
  text: string;
}

const MANIFEST_EXT = /\.(ya?ml|json)$/i;
const URL_TIMEOUT_MS = 30_000;
const MAX_REDIRECTS = 5;
/** A manifest is kilobytes; a URL that streams on (a log, a mistaken endpoint) is cut here. */
const MAX_URL_CHARS = 64 * 1024 * 1024;

export async function readManifestInputs(args: string[]): Promise<ManifestInput[]> {
  if (args.filter((a) => a === '-').length > 1) {
    throw new Error('- is given twice: stdin can be read only once; save the second manifest to a file and pass its path');
  }
  const out: ManifestInput[] = [];
  for (const arg of args) {
    if (arg === '-') out.push({ source: '<stdin>', text: readFileSync(0, 'utf8') });
    else if (/^https?:\/\//i.test(arg)) out.push({ source: arg, text: await fetchText(arg) });
    else out.push(...readPath(arg));
  }
  return out;
}

function readPath(p: string): ManifestInput[] {
  let st;
  try {
    st = statSync(p);
  } catch (e) {
    throw new Error(`${p}: ${reason(e)}; give a manifest file, a directory of them, an http(s) URL or - for stdin`);
  }
  if (!st.isDirectory()) return [{ source: p, text: readText(p) }];
  const files = manifestFiles(p);
  if (files.length === 0) throw new Error(`${p}: no .yaml, .yml or .json file in this directory or below it`);
  return files.map((f) => ({ source: f, text: readText(f) }));
}

/** A directory's manifest files, recursively, in a stable (name) order. */
function manifestFiles(dir: string): string[] {
  const files: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) files.push(...manifestFiles(p));
    else if (MANIFEST_EXT.test(e.name) && (e.isFile() || linksToFile(p))) files.push(p);
  }
  return files;
}

/** A symbolic link named like a manifest: read when it leads to a file; a broken one is an error, not a skip. */
function linksToFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${p}: a symbolic link to a file that does not exist; remove the link or point it at a manifest`);
    throw new Error(`${p}: ${reason(e)}`);
  }
}

function readText(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch (e) {
    throw new Error(`${p}: ${reason(e)}`);
  }
}

async function fetchText(url: string): Promise<string> {
  let a;
  try {
    a = await httpGet(url, { timeoutMs: URL_TIMEOUT_MS, redirects: MAX_REDIRECTS, maxChars: MAX_URL_CHARS });
  } catch (e) {
    throw new Error(`${url}: could not fetch it (${(e as Error).message}); check the URL, or download the file and pass its path`);
  }
  if (a.status !== 200) throw new Error(`${url}: the server answered HTTP ${a.status}; check the URL`);
  return a.body;
}

function reason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file or directory';
  if (code === 'EACCES') return 'permission denied';
  return (e as Error).message;
}

/**
 * Several injected streams as one YAML stream for `kubectl apply -f -`: a `---` between inputs,
 * unless the next already starts a document with one. Pure.
 */
export function joinYamlStreams(outputs: string[]): string {
  let joined = '';
  for (const o of outputs) {
    if (o.trim() === '') continue;
    if (joined !== '') {
      if (!joined.endsWith('\n')) joined += '\n';
      if (!/^---(\s|$)/.test(o)) joined += '---\n';
    }
    joined += o;
  }
  return joined;
}
