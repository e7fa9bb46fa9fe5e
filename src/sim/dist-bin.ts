// The CLI as the image and the DaemonSet run it: compiled to dist/. The simulated cluster, the
// demo's mesh and the tests start their agents, controllers and CLI calls from there: started
// from the sources, Node strips the types of every module it loads, about twice the CPU of a
// start from dist/, and a demo or an e2e file starts many. A dist/ older than the sources would
// test old code, so the paths are handed out only once dist/ is newer than every source.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

// The package root, whether this module runs as src/sim or as dist/src/sim.
const ROOT = (() => {
  let d = path.dirname(fileURLToPath(import.meta.url));
  while (!fs.existsSync(path.join(d, 'package.json')) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
})();
const DIST_BIN = path.join(ROOT, 'dist/bin/mesh-agent.js');
const DIST_CNI_BIN = path.join(ROOT, 'dist/bin/mesh-agent-cni.js');
/** What tsconfig.build.json compiles. */
const SOURCE_DIRS = ['src', 'bin'];
const FIX = 'run ./dev setup or npx tsc -p tsconfig.build.json';

/** Why dist/ cannot stand for the sources under `root` (missing, or a source newer than it), or null. */
export function distProblem(root = ROOT): string | null {
  const bin = path.join(root, 'dist/bin/mesh-agent.js');
  let built: number;
  try {
    built = fs.statSync(bin).mtimeMs;
  } catch {
    return `${bin} is missing; ${FIX}`;
  }
  for (const dir of SOURCE_DIRS) {
    for (const rel of fs.readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' })) {
      if (!rel.endsWith('.ts')) continue;
      const file = path.join(root, dir, rel);
      if (fs.statSync(file).mtimeMs > built) return `dist/ is older than the sources (${path.relative(root, file)} changed after ${path.relative(root, bin)} was built); ${FIX}`;
    }
  }
  return null;
}

// Found fresh once per process (the walk is some 250 stats); a stale finding is walked again on
// the next call, so a caller that builds dist/ itself (bench/env.ts) can ask again after.
let fresh = false;
function checkDist(): void {
  if (fresh) return;
  const problem = distProblem();
  if (problem) throw new Error(problem);
  fresh = true;
}

/** dist/bin/mesh-agent.js; throws naming the fix if dist/ is missing or older than src/ or bin/. */
export function meshBin(): string {
  checkDist();
  return DIST_BIN;
}

/** dist/bin/mesh-agent-cni.js (the chained CNI plugin), checked as meshBin(). */
export function meshCniBin(): string {
  checkDist();
  return DIST_CNI_BIN;
}

/** The compiled module of a source (`src/agent/agent.ts` → dist/src/agent/agent.js), checked as meshBin(): for fixtures that drive a module in their own process. */
export function distModule(source: string): string {
  checkDist();
  if (!/^(src|bin)\/.+\.ts$/.test(source)) throw new Error(`distModule: ${source} is not a source under src/ or bin/`);
  return path.join(ROOT, 'dist', source.replace(/\.ts$/, '.js'));
}
