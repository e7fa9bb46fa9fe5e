import test from 'ava';
import { DEFAULT_OPAQUE_PORTS, PortSet } from '../src/proxy/ports.ts';

test('parse accepts ports and ranges, merges and sorts them', (t) => {
  const s = PortSet.parse(' 5010, 3306,5000-5009 , 25 ');
  t.deepEqual(s.ranges(), [[25, 25], [3306, 3306], [5000, 5010]]);
  t.is(s.toString(), '25,3306,5000-5010');
  for (const p of [25, 3306, 5000, 5005, 5010]) t.true(s.has(p), String(p));
  for (const p of [0, 24, 26, 3305, 4999, 5011, 65535, 70000, -1, 1.5]) t.false(s.has(p), String(p));
});

test('parse round-trips through toString', (t) => {
  const spec = '1,80-81,443,65535';
  t.is(PortSet.parse(PortSet.parse(spec).toString()).toString(), spec);
});

test('empty spec is the empty set', (t) => {
  t.deepEqual(PortSet.parse('').ranges(), []);
  t.deepEqual(PortSet.parse('  ').ranges(), []);
  t.false(PortSet.parse('').has(80));
});

test('parse errors name the bad token', (t) => {
  const cases: Array<[string, RegExp]> = [
    ['80,http', /"http"/],
    ['80,,443', /empty entry/],
    ['0', /"0" is outside 1-65535/],
    ['65536', /"65536" is outside/],
    ['5010-5000', /"5010-5000" has its low end above/],
    ['80-', /bad token "80-"/],
    ['-5', /bad token "-5"/],
    ['1e3', /bad token "1e3"/],
    ['80 443', /bad token "80 443"/],
  ];
  for (const [spec, re] of cases) {
    const err = t.throws(() => PortSet.parse(spec), undefined, spec);
    t.regex(err!.message, re, spec);
  }
});

test('the default opaque list parses and holds the documented ports', (t) => {
  const s = PortSet.parse(DEFAULT_OPAQUE_PORTS);
  for (const p of [25, 587, 3306, 4222, 4444, 5432, 6379, 9300, 11211, 27017]) t.true(s.has(p), String(p));
  t.false(s.has(80));
  t.false(s.has(443));
});

test('of() validates ranges', (t) => {
  t.true(PortSet.of([80, [8000, 8001]]).has(8001));
  t.throws(() => PortSet.of([[9, 3]]));
  t.throws(() => PortSet.of([0]));
});
