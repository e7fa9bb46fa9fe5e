// The tests and the simulated cluster run the agent from dist/: a dist/ missing or older than
// any source is refused, naming the fix, so no test passes against old code.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { distProblem } from '../src/sim/dist-bin.ts';
import { testTempDir } from './helpers/temp-dir.ts';

function tree(t: { teardown(f: () => void): void }): string {
  const root = testTempDir(t);
  for (const f of ['src/agent/agent.ts', 'bin/mesh-agent.ts', 'src/sim/echo.proto']) {
    fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    fs.writeFileSync(path.join(root, f), '');
  }
  return root;
}
const at = (root: string, f: string, s: number) => fs.utimesSync(path.join(root, f), s, s);

test('dist/ built after every source is used', (t) => {
  const root = tree(t);
  fs.mkdirSync(path.join(root, 'dist/bin'), { recursive: true });
  fs.writeFileSync(path.join(root, 'dist/bin/mesh-agent.js'), '');
  for (const f of ['src/agent/agent.ts', 'bin/mesh-agent.ts']) at(root, f, 1000);
  at(root, 'dist/bin/mesh-agent.js', 2000);
  // Only the TypeScript is compiled: a newer data file does not make dist/ stale.
  at(root, 'src/sim/echo.proto', 3000);
  t.is(distProblem(root), null);
});

test('a missing dist/ or a source changed after the build is refused, naming the file and the fix', (t) => {
  const root = tree(t);
  t.regex(distProblem(root) ?? '', /dist\/bin\/mesh-agent\.js is missing; run \.\/dev setup or npx tsc -p tsconfig\.build\.json/);
  fs.mkdirSync(path.join(root, 'dist/bin'), { recursive: true });
  fs.writeFileSync(path.join(root, 'dist/bin/mesh-agent.js'), '');
  at(root, 'dist/bin/mesh-agent.js', 2000);
  at(root, 'bin/mesh-agent.ts', 1000);
  at(root, 'src/agent/agent.ts', 3000);
  t.is(distProblem(root), `dist/ is older than the sources (src/agent/agent.ts changed after dist/bin/mesh-agent.js was built); run ./dev setup or npx tsc -p tsconfig.build.json`);
});
