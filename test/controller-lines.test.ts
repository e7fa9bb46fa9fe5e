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

/** Everything readLines delivered for `chunks` with a bound of `max`. */
async function read(chunks: string[], max: number): Promise<{ lines: string[]; tooLong: number[] }> {
  const s = new PassThrough();
  const r = { lines: [] as string[], tooLong: [] as number[] };
  readLines(s, (l) => r.lines.push(l), (n) => r.tooLong.push(n), max);
  for (const c of chunks) s.write(c);
  s.end();
  await new Promise((resolve) => s.on('end', resolve));
  return r;
}

test('a line at the bound whose CRLF is cut between reads passes as it does read whole (found by the fuzz test)', async (t) => {
  const whole = await read(['x'.repeat(8) + '\r\nnext\n'], 8);
  t.deepEqual(whole, { lines: ['x'.repeat(8), 'next'], tooLong: [] });
  // Before: the \r counted while the \n was still to come, and the same line was refused.
  t.deepEqual(await read(['x'.repeat(8) + '\r', '\nnext\n'], 8), whole);
  // An unterminated last line keeps its \r, so there it counts.
  t.deepEqual(await read(['x'.repeat(8) + '\r'], 8), { lines: [], tooLong: [9] });
});

test('the bound is in UTF-8 bytes, not characters (found by the fuzz test: five é, ten bytes, passed a bound of 8)', async (t) => {
  t.deepEqual(await read(['é'.repeat(5) + '\nnext\n'], 8), { lines: [], tooLong: [10] });
  t.deepEqual(await read(['é'.repeat(4) + '\n', 'é'.repeat(5)], 8), { lines: ['é'.repeat(4)], tooLong: [10] });
  t.deepEqual(await read(['😀😀\n'], 8), { lines: ['😀😀'], tooLong: [] });
});
