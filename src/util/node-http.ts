// node:http by require, not by an ES import. An ES import of a built-in module reads every one of
// its exports, and node:http's WebSocket, CloseEvent and MessageEvent getters then load undici
// (Node's fetch): in Node 24 +2.4 MB of V8 heap that stays and 16 MB of RSS at start-up, for
// classes the agent never uses (docs/benchmarks.md, "Memory as installed").
import type * as http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** node:http, without undici. */
export function nodeHttp(): typeof http {
  return require('node:http') as typeof http;
}
