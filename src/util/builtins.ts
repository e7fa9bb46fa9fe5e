// Built-in modules taken by require, not by an ES import. An ES import of a built-in module reads
// every one of its exports, and some exports are getters that build what the agent never uses
// (docs/benchmarks.md, "Memory as installed"): node:http's WebSocket, CloseEvent and MessageEvent
// load undici (Node's fetch; in Node 24 +2.4 MB of V8 heap that stays and 16 MB of RSS at
// start-up), node:tls's rootCertificates builds Node's CA list as strings (+180 KB of V8 heap in
// every thread, for roots the mesh never trusts: it verifies against its own anchors only).
import type * as http from 'node:http';
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
