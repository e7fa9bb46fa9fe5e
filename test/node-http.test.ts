// The agent loads node:http without undici (src/util/node-http.ts): an ES import of node:http reads
// its WebSocket, CloseEvent and MessageEvent exports, which load undici, +2.4 MB of V8 heap for
// classes the agent never uses. Checked in a fresh process: this one imports node:http itself.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src');

test('the CNI socket\'s server and the API client for an http:// server load node:http, and no undici', (t) => {
  const script = `
    const { CniServer } = await import(${JSON.stringify(path.join(SRC, 'agent/cni-server.ts'))});
    const { LeanKubeApi } = await import(${JSON.stringify(path.join(SRC, 'k8s/kube-api.ts'))});
    new LeanKubeApi({ server: 'http://127.0.0.1:1' });
    void CniServer;
    await new Promise((r) => setImmediate(r));
    const loaded = process.moduleLoadList;
    process.stdout.write(JSON.stringify({ http: loaded.includes('NativeModule http'), undici: loaded.includes('NativeModule internal/deps/undici/undici') }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { encoding: 'utf8' }));
  t.true(out.http, 'node:http was not loaded at all: the check below proves nothing');
  t.false(out.undici, 'undici was loaded: an ES import of node:http (import * as http / import(\'node:http\')) reads its WebSocket getter; load it with nodeHttp() from src/util/node-http.ts');
});

test('the CNI plugin, started for every pod sandbox, loads node:http and node:https, and no undici', (t) => {
  const script = `
    await import(${JSON.stringify(path.join(SRC, 'cni/plugin.ts'))});
    await import(${JSON.stringify(path.join(SRC, 'cni/pod-read.ts'))});
    const { nodeHttp } = await import(${JSON.stringify(path.join(SRC, 'util/node-http.ts'))});
    nodeHttp();
    await new Promise((r) => setImmediate(r));
    const loaded = process.moduleLoadList;
    process.stdout.write(JSON.stringify({ https: loaded.includes('NativeModule https'), undici: loaded.includes('NativeModule internal/deps/undici/undici') }));`;
  const out = JSON.parse(execFileSync(process.execPath, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', script], { encoding: 'utf8' }));
  t.true(out.https, 'node:https was not loaded at all: the check below proves nothing');
  t.false(out.undici, 'undici was loaded by the plugin: an ES import of node:http in src/cni reads its WebSocket getter; use nodeHttp() from src/util/node-http.ts');
});
