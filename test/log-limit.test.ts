// LogLimit (src/util/log-limit.ts), on a clock the test moves: one line per key per interval,
// the lines held back counted into the key's next line, and the keys (peers' addresses, in its
// callers) bounded.
import test from 'ava';
import { LogLimit, MAX_KEYS, suppressedField } from '../src/util/log-limit.ts';

/** hit() returns the held-back count of a line to log (null: held); full() the whole Held. */
function limiter() {
  const clock = { now: 1_000_000 };
  const full = new LogLimit(() => clock.now);
  return { clock, full, limit: { hit: (key: string, ms: number) => full.hit(key, ms)?.suppressed ?? null } };
}

test('the first line goes out; repeats within the interval are held and counted; the next line after it carries the count', (t) => {
  const { clock, limit } = limiter();
  t.is(limit.hit('10.0.0.1|expired', 10_000), 0, 'first: logged, nothing held back');
  t.is(limit.hit('10.0.0.1|expired', 10_000), null);
  clock.now += 9_999;
  t.is(limit.hit('10.0.0.1|expired', 10_000), null, 'one ms short of the interval: still held');
  clock.now += 1;
  t.is(limit.hit('10.0.0.1|expired', 10_000), 2, 'the interval is up: logged with the two held back');
  t.is(limit.hit('10.0.0.1|expired', 10_000), null, 'the interval starts again from that line');
  clock.now += 60_000;
  t.is(limit.hit('10.0.0.1|expired', 10_000), 1);
  clock.now += 60_000;
  t.is(limit.hit('10.0.0.1|expired', 10_000), 0, 'nothing held since the last line');
});

test('keys are independent: a held key does not hold another, and each counts its own', (t) => {
  const { clock, limit } = limiter();
  t.is(limit.hit('10.0.0.1|expired', 10_000), 0);
  t.is(limit.hit('10.0.0.2|expired', 10_000), 0, 'another peer');
  t.is(limit.hit('10.0.0.1|untrusted', 10_000), 0, 'another cause');
  for (let i = 0; i < 3; i++) t.is(limit.hit('10.0.0.1|expired', 10_000), null);
  t.is(limit.hit('10.0.0.2|expired', 10_000), null);
  clock.now += 10_000;
  t.is(limit.hit('10.0.0.1|expired', 10_000), 3);
  t.is(limit.hit('10.0.0.2|expired', 10_000), 1);
  t.is(limit.hit('10.0.0.1|untrusted', 10_000), 0);
});

test('the keys are bounded: a new key past MAX_KEYS starts the set over, so a flood of new peers cannot grow it; what the forgotten keys held goes out with that key\'s line', (t) => {
  const { full } = limiter();
  t.deepEqual(full.hit('first', 10_000), { suppressed: 0, forgotten: 0 });
  t.is(full.hit('first', 10_000), null);
  t.is(full.hit('first', 10_000), null);
  for (let i = 1; i < MAX_KEYS; i++) t.deepEqual(full.hit(`peer-${i}`, 10_000), { suppressed: 0, forgotten: 0 });
  t.is(full.hit('peer-7', 10_000), null);
  t.is(full.hit('first', 10_000), null, `${MAX_KEYS} keys held: still remembered`);
  t.deepEqual(full.hit('one-too-many', 10_000), { suppressed: 0, forgotten: 4 }, 'first\'s 3 and peer-7\'s 1, said here since their keys are forgotten');
  t.deepEqual(full.hit('first', 10_000), { suppressed: 0, forgotten: 0 }, 'forgotten when the set started over: logged again, its count said once already');
  t.is(full.hit('one-too-many', 10_000), null, 'the key that started it over is remembered');
  t.deepEqual(full.hit('peer-7', 10_000), { suppressed: 0, forgotten: 0 }, 'every earlier key was forgotten');
});

test('suppressedField: each field only when something was held back', (t) => {
  t.deepEqual(suppressedField({ suppressed: 0, forgotten: 0 }), {});
  t.deepEqual(suppressedField({ suppressed: 4, forgotten: 0 }), { suppressed: 4 });
  t.deepEqual(suppressedField({ suppressed: 0, forgotten: 9 }), { suppressedForgotten: 9 });
  t.deepEqual(suppressedField({ suppressed: 4, forgotten: 9 }), { suppressed: 4, suppressedForgotten: 9 });
});
