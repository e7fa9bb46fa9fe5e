// The plugin's copy is as complete as this reading of imports: every form a module can load
// another by, and the errors that stop an install that would copy a plugin that cannot load.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { moduleClosure, runtimeImports } from '../src/util/module-closure.ts';
import { testTempDir } from './helpers/temp-dir.ts';

test('runtimeImports finds every run-time form, in TypeScript and in tsc\'s output, and not types, comments or strings', (t) => {
  const src = [
    "import fs from 'node:fs';",
    "import { a, type B } from './a.ts';",
    "import * as ns from \"./b.js\";",
    'import {',
    '  c,',
    '  d,',
    "} from './c.ts';",
    "import './side.ts';",
    "export { e } from './e.ts';",
    "export * from './star.ts';",
    "import type { T } from './types-only.ts';",
    "export type { U } from './types-too.ts';",
    "const m = await import('./lazy.ts');",
    'const n = await import("../up/lazy2.js");',
    "// import { x } from './in-comment.ts';",
    "const s = \"import y from './in-string.ts'\";",
    "  import  { indented }  from  './indented.ts'",
  ].join('\n');
  t.deepEqual(runtimeImports(src).sort(), ['../up/lazy2.js', './a.ts', './b.js', './c.ts', './e.ts', './indented.ts', './lazy.ts', './side.ts', './star.ts', 'node:fs'].sort());
});

function tree(t: Parameters<typeof testTempDir>[0], files: Record<string, string>): string {
  const root = testTempDir(t);
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(root, f)), { recursive: true });
    fs.writeFileSync(path.join(root, f), text);
  }
  return root;
}

test('moduleClosure follows imports across directories, entry first, each module once, skipping builtins', (t) => {
  const root = tree(t, {
    'bin/entry.ts': "import './../src/a.ts';\nimport fs from 'node:fs';\n",
    'src/a.ts': "import { b } from './b.ts';\nexport { c } from './sub/c.ts';\n",
    'src/b.ts': "import { a } from './a.ts';\nconst l = () => import('./sub/c.ts');\n",
    'src/sub/c.ts': "import '../b.ts';\n",
    'src/unused.ts': '',
  });
  t.deepEqual(moduleClosure(root, 'bin/entry', '.ts'), ['bin/entry', 'src/a', 'src/b', 'src/sub/c']);
});

test('moduleClosure refuses what the copy could not load: a missing module (naming its importer and the fix), an npm package, a module outside the root', (t) => {
  const missing = tree(t, { 'bin/entry.js': "import \"../src/a.js\";\n", 'src/a.js': "import { gone } from './gone.js';\n" });
  const e1 = t.throws(() => moduleClosure(missing, 'bin/entry', '.js'));
  t.regex(e1!.message, /the module src\/gone\.js \(imported by src\/a\.js\) is missing under .*build the package again/);
  const pkg = tree(t, { 'bin/entry.ts': "import k8s from '@kubernetes/client-node';\n" });
  t.regex(t.throws(() => moduleClosure(pkg, 'bin/entry', '.ts'))!.message, /imports the package '@kubernetes\/client-node', which a copy without node_modules cannot load/);
  const out = tree(t, { 'bin/entry.ts': "import '../../elsewhere.ts';\n" });
  t.regex(t.throws(() => moduleClosure(out, 'bin/entry', '.ts'))!.message, /outside/);
  t.regex(t.throws(() => moduleClosure(out, 'bin/none', '.ts'))!.message, /the module bin\/none\.ts is missing/);
});
