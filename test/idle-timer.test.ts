import test from 'ava';
import { IdleTimer } from '../src/util/idle-timer.ts';
import { ManualClock } from './helpers/manual-clock.ts';

// On a manual clock: "did not fire" is checked at the last moment it must not, and "fired" at
// the moment it must, however slow the machine. One test runs on the real clock, only awaiting.
function idleAfter(ms: number) {
  const clock = new ManualClock();
  const firedAt: number[] = [];
  const t = new IdleTimer(ms, () => firedAt.push(clock.now()), clock);
  return { t, clock, start: clock.now(), firedAt };
}

test('idle from the start: fires once, idleMs after it was made, and nothing stays armed', (t) => {
  const i = idleAfter(40);
  i.clock.advance(39);
  t.deepEqual(i.firedAt, []);
  i.clock.advance(1);
  t.deepEqual(i.firedAt, [i.start + 40]);
  t.deepEqual(i.clock.pending(), []);
  i.clock.advance(10_000);
  t.is(i.firedAt.length, 1);
});

test('never while something is open, however long; then idleMs after the last one left', (t) => {
  const i = idleAfter(30);
  i.t.enter();
  i.t.enter();
  // Several of its periods pass with streams open: the timer lapses and is not idle.
  i.clock.advance(100);
  t.deepEqual(i.firedAt, []);
  i.t.leave();
  i.clock.advance(100);
  t.deepEqual(i.firedAt, [], 'one is still open');
  t.is(i.t.open, 1);
  i.t.leave();
  const lastLeft = i.clock.now();
  i.clock.advance(29);
  t.deepEqual(i.firedAt, []);
  i.clock.advance(1);
  t.deepEqual(i.firedAt, [lastLeft + 30]);
});

test('a stream that comes and goes postpones the deadline to idleMs after it left', (t) => {
  const i = idleAfter(60);
  i.clock.advance(40);
  i.t.enter();
  i.t.leave();
  const left = i.clock.now();
  // The first timer (armed at construction) fires at 60 while the deadline has moved: it re-arms for the rest.
  i.clock.advance(59);
  t.deepEqual(i.firedAt, []);
  i.clock.advance(1);
  t.deepEqual(i.firedAt, [left + 60]);
});

test('a lapse only a little before the deadline re-arms for the rest: only libuv\'s 1 ms rounding may fire early', (t) => {
  const i = idleAfter(60);
  i.clock.advance(2);
  i.t.enter();
  i.t.leave();
  i.clock.advance(59);
  t.deepEqual(i.firedAt, [], 'the first timer lapsed 2 ms before the deadline');
  i.clock.advance(1);
  t.deepEqual(i.firedAt, [i.start + 62]);
});

test('a leave() without an enter() is ignored: it neither counts nor moves the deadline', (t) => {
  const i = idleAfter(20);
  i.clock.advance(10);
  i.t.leave();
  t.is(i.t.open, 0);
  i.clock.advance(10);
  t.deepEqual(i.firedAt, [i.start + 20]);
});

test('stop() cancels, idle or open; a leave() after it arms nothing', (t) => {
  const idle = idleAfter(20);
  idle.clock.advance(10);
  idle.t.stop();
  t.deepEqual(idle.clock.pending(), []);
  idle.clock.advance(10_000);
  t.deepEqual(idle.firedAt, []);

  const open = idleAfter(20);
  open.t.enter();
  open.t.stop();
  open.t.leave();
  open.clock.advance(10_000);
  t.deepEqual(open.firedAt, []);
  t.deepEqual(open.clock.pending(), []);
});

test('on the real clock: fires, not before idleMs', async (t) => {
  // The timer is unref'd (it must not keep the agent alive): hold the loop open while the test awaits it.
  const keep = setInterval(() => {}, 60_000);
  t.teardown(() => clearInterval(keep));
  const start = performance.now();
  const firedAt = await new Promise<number>((r) => new IdleTimer(40, () => r(performance.now())));
  // Timers never fire early beyond libuv's 1 ms rounding.
  t.true(firedAt - start >= 39, `fired after ${firedAt - start} ms`);
});
