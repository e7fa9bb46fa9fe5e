// Where `inject` reads manifests from, as `linkerd inject` and `kubectl apply -f` take them: a
// file, `-` for stdin, a directory (its .yaml, .yml and .json files, recursively, in name order)
// or an http(s) URL. Each input keeps its own name, so an error still says FILE:LINE.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';
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
  if (!st.isDirectory()) return [{ source: p, text: readFileSync(p, 'utf8') }];
  const files = manifestFiles(p);
  if (files.length === 0) throw new Error(`${p}: no .yaml, .yml or .json file in this directory or below it`);
  return files.map((f) => ({ source: f, text: readFileSync(f, 'utf8') }));
}

/** A directory's manifest files, recursively, in a stable (name) order. */
function manifestFiles(dir: string): string[] {
  const files: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) files.push(...manifestFiles(p));
    else if (MANIFEST_EXT.test(e.name) && (e.isFile() || statSync(p).isFile())) files.push(p);
  }
  return files;
}

/**
 * GET with redirects followed, by node:http(s) rather than fetch(): fetch refuses the Fetch
 * standard's "bad ports" (6000, 6665-6669, 10080...), where a cluster's file server may listen.
 */
function fetchText(url: string, redirects = MAX_REDIRECTS): Promise<string> {
  return new Promise((resolve, reject) => {
    const fail = (why: string) => reject(new Error(`${url}: could not fetch it (${why}); check the URL, or download the file and pass its path`));
    const get = url.toLowerCase().startsWith('https:') ? https.get : http.get;
    const req = get(url, { timeout: URL_TIMEOUT_MS }, (res) => {
      const status = res.statusCode ?? 0;
      if (status >= 300 && status < 400 && res.headers.location) {
        res.resume();
        if (redirects === 0) return fail(`more than ${MAX_REDIRECTS} redirects`);
        const next = new URL(res.headers.location, url);
        // As curl and browsers: what was asked over TLS is not fetched in the clear.
        if (url.toLowerCase().startsWith('https:') && next.protocol !== 'https:') return fail(`it redirects to ${next.toString()}, which is not https`);
        return resolve(fetchText(next.toString(), redirects - 1));
      }
      if (status !== 200) {
        res.resume();
        return reject(new Error(`${url}: the server answered HTTP ${status}; check the URL`));
      }
      res.setEncoding('utf8');
      let text = '';
      res.on('data', (c: string) => {
        text += c;
        if (text.length > MAX_URL_CHARS) {
          res.destroy();
          fail(`it is larger than ${MAX_URL_CHARS / 1024 / 1024} MB, not a manifest`);
        }
      });
      res.on('end', () => resolve(text));
      res.on('error', (e) => fail(e.message));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${URL_TIMEOUT_MS / 1000} s`)));
    req.on('error', (e) => fail(e.message));
  });
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
