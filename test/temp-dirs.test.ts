// Every temp directory the sim, the demo, bench runs and the tests make is named by
// ownedTempPrefix() (src/sim/layout.ts) with its maker's pid, so cleanupLeftovers() removes it
// once the maker is dead, also after a SIGKILL (test/sim.test.ts shows that with a real process).
// A dir named any other way outlives a killed run for good, and nothing fails when one is added,
// so this scans the sources for other ways into the temp dir: a call of os.tmpdir() or a
// '/tmp/...' string. Scanning text is crude, but the two forms are what every such dir in this
// repo was made with, and a false hit costs one line of ALLOWED with its reason.
import test from 'ava';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SCANNED = ['src', 'test', 'bench', 'scripts', 'bin'];
/** The only files that may use the temp dir directly, and why; none of them makes a directory there. */
const ALLOWED: Record<string, string> = {
  'src/sim/layout.ts': 'names the owned temp dirs (ownedTempPrefix, cniDir)',
  'src/sim/leftovers.ts': 'sweeps them',
  'test/helpers/demo-run.ts': 'lists what a demo run left there',
};
const TMPDIR_CALL = /\btmpdir\s*\(/;
const TMP_STRING = /['"`]\/tmp\//;

function sources(): string[] {
  return SCANNED.flatMap((dir) =>
    fs
      .readdirSync(path.join(root, dir), { recursive: true, encoding: 'utf8' })
      .filter((f) => /\.(ts|js|mjs|cjs)$/.test(f) && !f.split(path.sep).includes('node_modules'))
      .map((f) => path.join(dir, f)),
  );
}

test('temp directories are made through ownedTempPrefix(), so the sweep can attribute them to their maker', (t) => {
  const files = sources();
  t.true(files.includes('src/sim/mesh.ts') && files.includes('test/helpers/browser.ts'), 'the scan sees the sources');
  const found: string[] = [];
  for (const f of files) {
    if (f in ALLOWED) continue;
    fs.readFileSync(path.join(root, f), 'utf8')
      .split('\n')
      .forEach((line, i) => {
        const code = line.trimStart();
        if (code.startsWith('//') || code.startsWith('*') || code.startsWith('/*')) return; // comments may name it
        if (TMPDIR_CALL.test(line) || TMP_STRING.test(line)) found.push(`  ${f}:${i + 1}: ${code}`);
      });
  }
  t.deepEqual(
    found,
    [],
    `these use the temp dir directly:\n${found.join('\n')}\nmake a temp dir with fs.mkdtempSync(ownedTempPrefix(KIND)) from src/sim/layout.ts instead ` +
      `('test' in tests and their helpers, 'bench' in bench/, 'cluster' and 'demo' in the sim and the demo; in a test, testTempDir(t) from test/helpers/temp-dir.ts, which also removes it at the test's end): ` +
      'its name then carries this process\'s pid, and cleanupLeftovers() removes it once the process is dead, also after a SIGKILL. ' +
      'A dir inside such a dir needs nothing more. A file that only reads the temp dir goes into ALLOWED in test/temp-dirs.test.ts, with its reason.',
  );
  for (const [f, why] of Object.entries(ALLOWED)) {
    const text = fs.readFileSync(path.join(root, f), 'utf8');
    t.true(TMPDIR_CALL.test(text), `${f} no longer uses the temp dir (${why}): take it out of ALLOWED`);
    t.false(/\b(mkdtemp|mkdir)(Sync)?\s*\(/.test(text), `${f} is allowed the temp dir because it ${why}, but makes a directory: use ownedTempPrefix()`);
  }
});
