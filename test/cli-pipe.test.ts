import test from 'ava';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { meshBin } from '../src/sim/dist-bin.ts';
import { testTempDir } from './helpers/temp-dir.ts';

const BIN = meshBin();

test('inject | head: the reader closing the pipe early ends the CLI quietly (no stack trace), with the exit status of a Go CLI killed by SIGPIPE', async (t) => {
  const dir = testTempDir(t);
  const file = path.join(dir, 'big.yaml');
  const one = fs.readFileSync(new URL('./fixtures/manifests/multi.yaml', import.meta.url), 'utf8');
  fs.writeFileSync(file, Array.from({ length: 400 }, () => one).join('---\n')); // far more than a pipe holds
  const child = spawn(process.execPath, ['--disable-warning=ExperimentalWarning', BIN, 'inject', file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  // Like `head -1`: read the first chunk, then close the pipe.
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  child.stdout.destroy();
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  t.false(/Unhandled|EPIPE|at /.test(stderr.split('\n').filter((l) => !/" (injected|skipped)$/.test(l)).join('\n')), stderr.slice(-2000));
  t.is(code, 141);
});
