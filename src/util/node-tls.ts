// node:tls by require, not by an ES import (as node-http.ts, for the same reason): an ES import of
// a built-in module reads every one of its exports, and node:tls's rootCertificates getter then
// builds the bundled CA list as strings, +180 KB of V8 heap that stays in every thread that does
// it (the agent's main thread and each proxy worker), for certificates the mesh never trusts: it
// verifies against its own anchors only (docs/benchmarks.md, "Memory as installed").
import type * as tls from 'node:tls';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** node:tls, without its root certificates. */
export function nodeTls(): typeof tls {
  return require('node:tls') as typeof tls;
}
