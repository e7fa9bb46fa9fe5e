// src/util/proc-stat.ts: the one reader of /proc/<pid>/stat fields (bench CPU times, the priority
// tests' nice values, the simulator's zombie check, the listen-in test's reaped-or-not check).
import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import { procStatField, procStatInt } from '../src/util/proc-stat.ts';

// Fields 1-19 and a few more, as the kernel writes them (with the trailing newline).
const line = (comm: string, nice = '0') => `4242 (${comm}) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 ${nice} 11 0 5000\n`;

test('fields count from the command name\'s last \')\': a name holding \') \' and a space', (t) => {
  for (const comm of ['node', 'x) y', 'node (x) y', ') ) ']) {
    const stat = line(comm, '-10');
    t.is(procStatField(stat, 'state'), 'S', comm);
    t.is(procStatInt(stat, 'utime'), 1234, comm);
    t.is(procStatInt(stat, 'stime'), 567, comm);
    t.is(procStatInt(stat, 'nice'), -10, comm);
    t.is(procStatInt(stat, 'num_threads'), 11, comm);
  }
});

test('a missing field throws, naming it', (t) => {
  t.throws(() => procStatField('', 'state'), { message: /^no state \(field 3\) in the \/proc stat line "" \(is the process gone\?\)/ });
  t.throws(() => procStatInt('4242 (node) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234', 'stime'), { message: /^no stime \(field 15\)/ });
  t.throws(() => procStatInt('4242 (node) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20\n', 'nice'), { message: /^no nice \(field 19\)/ });
  t.throws(() => procStatInt('4242 node S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0', 'nice'), { message: /^no nice/ }, 'no command name in parentheses');
  t.throws(() => procStatInt(line('node', 'x'), 'nice'), { message: /^nice \(field 19\) .* is "x", not a whole number/ });
});

test('this process\'s own line: running, at its nice value', (t) => {
  const stat = fs.readFileSync('/proc/self/stat', 'utf8');
  t.is(procStatField(stat, 'state'), 'R');
  t.is(procStatInt(stat, 'nice'), os.getPriority(0));
  t.true(procStatInt(stat, 'utime') + procStatInt(stat, 'stime') > 0);
  t.true(procStatInt(stat, 'num_threads') >= 2, 'Node runs V8\'s platform threads beside the main one');
});
