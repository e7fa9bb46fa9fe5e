// The agent loads node:http without undici (src/util/node-http.ts): an ES import of node:http reads
// its WebSocket, CloseEvent and MessageEvent exports, which load undici, +2.4 MB of V8 heap for
// classes the agent never uses. Checked in a fresh process: this one imports node:http itself.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src');
const src = (file: string) => JSON.stringify(path.join(SRC, file));

/** Runs `body` (an ES module; `src(file)` gives a source path) in a fresh Node, then says which of `modules` and undici it loaded. */
function loadedBy(body: string, modules: string[]): { loaded: Record<string, boolean>; undici: boolean } {
  const script = `${body}
    await new Promise((r) => setImmediate(r));
    const list = process.moduleLoadList;
    process.stdout.write(JSON.stringify({
      loaded: Object.fromEntries(${JSON.stringify(modules)}.map((m) => [m, list.includes('NativeModule ' + m)])),
      undici: list.includes('NativeModule internal/deps/undici/undici'),
    }));`;
  return JSON.parse(execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { encoding: 'utf8' }));
}

test('the CNI socket\'s server and the API client for an http:// server load node:http, and no undici', (t) => {
  const out = loadedBy(`
    const { CniServer } = await import(${src('agent/cni-server.ts')});
    const { LeanKubeApi } = await import(${src('k8s/kube-api.ts')});
    new LeanKubeApi({ server: 'http://127.0.0.1:1' });
    void CniServer;`, ['http']);
  t.true(out.loaded.http, 'node:http was not loaded at all: the check below proves nothing');
  t.false(out.undici, 'undici was loaded: an ES import of node:http (import * as http / import(\'node:http\')) reads its WebSocket getter; load it with nodeHttp() from src/util/node-http.ts');
});

test('the CNI plugin, started for every pod sandbox, loads node:http and node:https, and no undici', (t) => {
  const out = loadedBy(`
    await import(${src('cni/plugin.ts')});
    await import(${src('cni/pod-read.ts')});
    const { nodeHttp } = await import(${src('util/node-http.ts')});
    nodeHttp();`, ['http', 'https']);
  t.true(out.loaded.http && out.loaded.https, 'node:http or node:https was not loaded at all: the check below proves nothing');
  t.false(out.undici, 'undici was loaded by the plugin: an ES import of node:http in src/cni reads its WebSocket getter; use nodeHttp() from src/util/node-http.ts');
});
