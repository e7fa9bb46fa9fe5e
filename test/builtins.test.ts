// The agent loads node:http without undici (src/util/builtins.ts): an ES import of node:http reads
// its WebSocket, CloseEvent and MessageEvent exports, which load undici, +2.4 MB of V8 heap for
// classes the agent never uses. And node:tls without its root certificates (src/util/builtins.ts):
// an ES import reads its rootCertificates getter, +180 KB of heap in every thread. Checked in a
// fresh process: this one imports both itself.
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
  t.false(out.undici, 'undici was loaded: an ES import of node:http (import * as http / import(\'node:http\')) reads its WebSocket getter; load it with nodeHttp() from src/util/builtins.ts');
});

test('the CNI plugin, started for every pod sandbox, loads node:http and node:https, and no undici', (t) => {
  const out = loadedBy(`
    await import(${src('cni/plugin.ts')});
    await import(${src('cni/pod-read.ts')});
    const { nodeHttp } = await import(${src('util/builtins.ts')});
    nodeHttp();`, ['http', 'https']);
  t.true(out.loaded.http && out.loaded.https, 'node:http or node:https was not loaded at all: the check below proves nothing');
  t.false(out.undici, 'undici was loaded by the plugin: an ES import of node:http in src/cni reads its WebSocket getter; use nodeHttp() from src/util/builtins.ts');
});

test('the mTLS modules (tunnels, identity manager and client) load node:tls without building its root certificates', (t) => {
  // The roots are built once per thread, by the first ES import of node:tls: if ours made none, this script's own import does, and the heap grows by their size.
  const script = `
    import { getHeapStatistics } from 'node:v8';
    const used = () => { for (let i = 0; i < 3; i++) gc(); return getHeapStatistics().used_heap_size; };
    for (const f of [${['tunnel/node-tunnels.ts', 'identity/manager.ts', 'identity/client.ts'].map(src).join(', ')}]) await import(f);
    const before = used();
    const tls = await import('node:tls');
    process.stdout.write(JSON.stringify({ grew: used() - before, roots: tls.rootCertificates.length }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--expose-gc', '--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { encoding: 'utf8' })) as { grew: number; roots: number };
  t.true(out.roots > 50, `node:tls has ${out.roots} root certificates: the check below proves nothing`);
  t.true(out.grew > 100 * 1024, `an ES import of node:tls after the mTLS modules grew the heap ${out.grew} bytes: they had built the root certificates already (import * as tls from 'node:tls'); load it with nodeTls() from src/util/builtins.ts`);
});
