// Built-in modules taken by require, not by an ES import. An ES import of a built-in module reads
// every one of its exports, and some exports are getters that build what the agent never uses
// (docs/benchmarks.md, "Memory as installed"): node:http's WebSocket, CloseEvent and MessageEvent
// load undici (Node's fetch; in Node 24 +2.4 MB of V8 heap that stays and 16 MB of RSS at
// start-up), node:tls's rootCertificates builds Node's CA list as strings (+180 KB of V8 heap in
// every thread, for roots the mesh never trusts: it verifies against its own anchors only).
// node:http2 (with node:tls, which it loads) is taken on first use: a proxy worker needs it for
// its first HTTP/2 connection or tunnel only, and each idle one held about 1.2 MB more with it. A
// worker expecting those (a meshed pod on its node) loads it when idle instead (warmHttp2).
// node:crypto's webcrypto getter loads Web Crypto (+31 KB of V8 heap per thread).
import type * as crypto from 'node:crypto';
import type * as http from 'node:http';
import type * as http2 from 'node:http2';
import type * as tls from 'node:tls';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** node:http, without undici. */
export function nodeHttp(): typeof http {
  return require('node:http') as typeof http;
}

/** node:tls, without its root certificates. */
export function nodeTls(): typeof tls {
  return require('node:tls') as typeof tls;
}

/** node:crypto, without Web Crypto. */
export function nodeCrypto(): typeof crypto {
  return require('node:crypto') as typeof crypto;
}

let h2: typeof http2 | undefined;
/** node:http2, loaded by the first call (kept: the HTTP/2 forwarder asks for it per stream). */
export function nodeHttp2(): typeof http2 {
  return (h2 ??= require('node:http2') as typeof http2);
}

let warming = false;
/**
 * Loads node:http2 once, after the current turn of the event loop (setImmediate), so that no
 * connection's accept or dial waits 5-58 ms for the require (docs/benchmarks.md, "node:http2 on
 * first use"). A connection that comes first loads it itself, as without this.
 */
export function warmHttp2(onError: (msg: string) => void): void {
  if (h2 !== undefined || warming) return;
  warming = true;
  setImmediate(() => {
    try {
      nodeHttp2();
    } catch (e) {
      onError(`node:http2 failed to load (${(e as Error).message}): this thread's HTTP/2 and tunnel connections will fail the same way; the agent needs Node 24 with its node:http2 (the image's Node)`);
    }
  });
}
