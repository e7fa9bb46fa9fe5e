// Runs the whole suite: the type check, then every ava test, and ends with the line CI reads:
// "N passed, N failed". Tests that need root or BPF fail loudly without them; none skip.
import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (name: string) => path.join(root, 'node_modules/.bin', name);

let passed = 0;
let failed = 0;

console.log('# type check (tsc --noEmit, and the dashboard\'s page: tsc --noEmit -p web)');
const tsc = spawnSync(bin('tsc'), ['--noEmit', '-p', root], { stdio: 'inherit' });
const tscWeb = spawnSync(bin('tsc'), ['--noEmit', '-p', path.join(root, 'web')], { stdio: 'inherit' });
if (tsc.status === 0 && tscWeb.status === 0) passed++;
else {
  failed++;
  console.log('not ok - type check failed');
}

// TAP gives one line per test, which we count and stream as they finish.
const ava = spawn(bin('ava'), ['--tap', ...process.argv.slice(2)], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] });
let buf = '';
let avaPass = 0;
let avaFail = 0;
ava.stdout.on('data', (d: Buffer) => {
  process.stdout.write(d);
  buf += d.toString();
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i);
    buf = buf.slice(i + 1);
    let m;
    if ((m = /^# pass (\d+)/.exec(line))) avaPass = Number(m[1]);
    else if ((m = /^# fail (\d+)/.exec(line))) avaFail = Number(m[1]);
  }
});
ava.on('close', (code) => {
  // A crash of ava itself (or a failed hook) counts as a failure even if no test line said so.
  if (code !== 0 && avaFail === 0) avaFail = 1;
  if (avaPass + avaFail === 0) {
    console.log('not ok - no test ran');
    avaFail = 1;
  }
  passed += avaPass;
  failed += avaFail;
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
});
