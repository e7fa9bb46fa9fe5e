import test from 'ava';
import { PassThrough } from 'node:stream';
import { readLines } from '../src/controller/lines.ts';

test('lines split across chunks, CRLF and a last unterminated line', async (t) => {
  const s = new PassThrough();
  const lines: string[] = [];
  readLines(s, (l) => lines.push(l), () => t.fail('not too long'));
  s.write('{"a":');
  s.write('1}\r\n{"b"');
  s.write(':2}\n\n');
  s.end('tail');
  await new Promise((r) => s.on('end', r));
  t.deepEqual(lines, ['{"a":1}', '{"b":2}', '', 'tail']);
});

test('a line that never ends stops at the bound, once, and nothing after it is delivered', async (t) => {
  const s = new PassThrough();
  const lines: string[] = [];
  const tooLong: number[] = [];
  readLines(s, (l) => lines.push(l), (n) => tooLong.push(n), 1000);
  s.write('ok\n');
  for (let i = 0; i < 50; i++) s.write('x'.repeat(100));
  s.write('\nlater\n');
  s.end();
  await new Promise((r) => s.on('end', r));
  t.deepEqual(lines, ['ok']);
  t.is(tooLong.length, 1);
  t.true(tooLong[0]! > 1000);
});

test('a line over the bound whose end arrives in the chunk that crosses it is refused too', async (t) => {
  const s = new PassThrough();
  const lines: string[] = [];
  const tooLong: number[] = [];
  readLines(s, (l) => lines.push(l), (n) => tooLong.push(n), 1000);
  s.write('x'.repeat(900));
  s.write('x'.repeat(110) + '\nafter\n');
  s.end();
  await new Promise((r) => s.on('end', r));
  t.deepEqual(lines, []);
  t.deepEqual(tooLong, [1010]);
});
