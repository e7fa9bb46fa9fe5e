// LogLimit (src/util/log-limit.ts), on a clock the test moves: one line per key per interval,
// the lines held back counted into the key's next line, and the keys (peers' addresses, in its
// callers) bounded.
import test from 'ava';
import { LogLimit, MAX_KEYS, suppressedField } from '../src/util/log-limit.ts';

function limiter() {
  const clock = { now: 1_000_000 };
  return { clock, limit: new LogLimit(() => clock.now) };
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

test('the keys are bounded: a new key past MAX_KEYS starts the set over, so a flood of new peers cannot grow it', (t) => {
  const { limit } = limiter();
  t.is(limit.hit('first', 10_000), 0);
  t.is(limit.hit('first', 10_000), null);
  for (let i = 1; i < MAX_KEYS; i++) t.is(limit.hit(`peer-${i}`, 10_000), 0);
  t.is(limit.hit('first', 10_000), null, `${MAX_KEYS} keys held: still remembered`);
  t.is(limit.hit('one-too-many', 10_000), 0);
  t.is(limit.hit('first', 10_000), 0, 'forgotten when the set started over (its held count with it): logged again');
  t.is(limit.hit('one-too-many', 10_000), null, 'the key that started it over is remembered');
  t.is(limit.hit('peer-1', 10_000), 0, 'every earlier key was forgotten');
});

test('suppressedField: the field only when something was held back', (t) => {
  t.deepEqual(suppressedField(0), {});
  t.deepEqual(suppressedField(4), { suppressed: 4 });
});
