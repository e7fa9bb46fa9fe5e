// Runs the whole suite: the type check, then the tests that need no simulated node or cluster
// (files without .e2e), then the end-to-end ones, and ends with the line CI reads:
// "N passed, N failed", after a line with what each part took. Tests that need root or BPF
// fail loudly without them; none skip. With file arguments: ava on just those files.
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name: string) => path.join(root, 'node_modules/.bin', name);

let passed = 0;
let failed = 0;
const took: string[] = [];
/** Every failing test's line, repeated at the end: a CI page that shows only the output's tail still names them. */
const failures: string[] = [];
const seconds = (t0: number) => ((performance.now() - t0) / 1000).toFixed(0);

console.log('# type check (tsc --noEmit, and the dashboard\'s page: tsc --noEmit -p web)');
let t0 = performance.now();
const tsc = spawnSync(bin('tsc'), ['--noEmit', '-p', root], { stdio: 'inherit' });
const tscWeb = spawnSync(bin('tsc'), ['--noEmit', '-p', path.join(root, 'web')], { stdio: 'inherit' });
if (tsc.status === 0 && tscWeb.status === 0) passed++;
else {
  failed++;
  console.log('not ok - type check failed');
  failures.push('not ok - type check failed');
}
took.push(`type check ${seconds(t0)} s`);

/** Runs ava over `files` with TAP output, streamed; resolves with its pass and fail counts. */
function ava(files: string[]): Promise<{ pass: number; fail: number }> {
  return new Promise((resolve) => {
    const child = spawn(bin('ava'), ['--tap', ...files], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
    let buf = '';
    let pass = 0;
    let fail = 0;
    child.stdout.on('data', (d: Buffer) => {
      process.stdout.write(d);
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let m;
        if (line.startsWith('not ok')) failures.push(line);
        if ((m = /^# pass (\d+)/.exec(line))) pass = Number(m[1]);
        else if ((m = /^# fail (\d+)/.exec(line))) fail = Number(m[1]);
      }
    });
    child.on('close', (code) => {
      // A crash of ava itself (or a failed hook) counts as a failure even if no test line said so.
      if (code !== 0 && fail === 0) {
        fail = 1;
        failures.push(`not ok - ava exited ${code} with no failing test line (a crash, or a failed hook): see above`);
      }
      if (pass + fail === 0) {
        console.log('not ok - no test ran');
        failures.push('not ok - no test ran');
        fail = 1;
      }
      resolve({ pass, fail });
    });
  });
}

/** End-to-end files that run for minutes by design, started first. */
const LONG_E2E = ['test/mtls-rotation.e2e.test.ts'];

const args = process.argv.slice(2);
const parts: Array<[string, string[]]> = [];
if (args.length > 0) parts.push(['tests', args]);
else {
  const all = fs.readdirSync(path.join(root, 'test')).filter((f) => f.endsWith('.test.ts')).sort().map((f) => `test/${f}`);
  // ava runs files in the order given (in CI; elsewhere it moves the files that failed last time to
  // the front), two at a time: the one file that runs for minutes by design
  // (5 minutes of calls while certificates rotate) starts first, so the other slot works through
  // the rest meanwhile instead of one slot idling at the end while it finishes.
  const e2e = all.filter((f) => f.includes('.e2e.'));
  const longFirst = e2e.filter((f) => LONG_E2E.includes(f)).concat(e2e.filter((f) => !LONG_E2E.includes(f)));
  parts.push(['unit and loopback tests', all.filter((f) => !f.includes('.e2e.'))], ['end-to-end tests (simulated nodes and clusters)', longFirst]);
}
for (const [what, files] of parts) {
  console.log(`# ${what}: ${files.length} files`);
  t0 = performance.now();
  const r = await ava(files);
  passed += r.pass;
  failed += r.fail;
  took.push(`${what} ${seconds(t0)} s (${r.pass + r.fail} tests)`);
}
if (failures.length > 0) console.log(`# failed:\n${failures.map((f) => `#   ${f}`).join('\n')}`);
console.log(`# took: ${took.join(', ')}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
