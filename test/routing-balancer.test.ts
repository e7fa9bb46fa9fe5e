// The balancer as pure logic: P2C over peak EWMA with a simulated clock, failure accrual's
// state machine, duration parsing. The same behaviours are proven through the datapath in
// test/cluster-balancing.e2e.test.ts.
import test from 'ava';
import { Balancer, FAILURE_PENALTY_MS, LINKERD_EWMA, type BalancedEndpoint } from '../src/routing/balancer.ts';
import { policyFromAnnotations } from '../src/routing/linkerd-annotations.ts';
import { accrualFromAnnotations, DEFAULT_ACCRUAL, FailureAccrual } from '../src/routing/failure-accrual.ts';
import { parseDuration } from '../src/routing/duration.ts';
import { chiSquareUniform, looksUniform } from './helpers/stats.ts';
import { rng } from './helpers/rng.ts';


const eps = (n: number) => Array.from({ length: n }, (_, i) => ({ ip: `10.0.0.${i + 1}`, port: 8080, pod: `p${i}` }));

/**
 * Runs `total` requests with `concurrency` in flight against endpoints whose latency is
 * latencyOf(ip, t), on a simulated clock; returns requests per endpoint ip.
 */
function simulate(b: Balancer, clock: { t: number }, total: number, concurrency: number, latencyOf: (ip: string, t: number) => number): Map<string, number> {
  const counts = new Map<string, number>();
  const inflight: Array<{ at: number; b: BalancedEndpoint; start: number }> = [];
  let sent = 0;
  const send = () => {
    const e = b.pick();
    if (e === null) throw new Error('no endpoint');
    counts.set(e.ep.ip, (counts.get(e.ep.ip) ?? 0) + 1);
    inflight.push({ at: clock.t + latencyOf(e.ep.ip, clock.t), b: e, start: clock.t });
    sent++;
  };
  while (sent < Math.min(concurrency, total)) send();
  while (inflight.length > 0) {
    inflight.sort((x, y) => x.at - y.at);
    const next = inflight.shift()!;
    clock.t = next.at;
    b.done(next.b, next.at - next.start, 'success');
    if (sent < total) send();
  }
  return counts;
}


test('equal endpoints share the load evenly (chi-square, p = 0.01) under concurrency', (t) => {
  const clock = { t: 0 };
  const r = rng(1);
  const b = new Balancer({ now: () => clock.t, random: r });
  b.setEndpoints(eps(3));
  const counts = simulate(b, clock, 3000, 10, () => 1 + r() * 0.2);
  t.true(looksUniform([...counts.values()], 0.01), `chi-square ${chiSquareUniform([...counts.values()]).toFixed(2)} for ${JSON.stringify([...counts])}`);
});

test('a sequential client alternates: the endpoint just used costs a little more', (t) => {
  const clock = { t: 0 };
  const b = new Balancer({ now: () => clock.t, random: rng(2) });
  b.setEndpoints(eps(3));
  const counts = simulate(b, clock, 3000, 1, () => 1);
  t.true(looksUniform([...counts.values()], 0.01), JSON.stringify([...counts]));
});

test('an endpoint 50 ms slower gets under 10% after a warm-up, and its share returns once it is fast again', (t) => {
  const clock = { t: 0 };
  const r = rng(3);
  const b = new Balancer({ now: () => clock.t, random: r });
  b.setEndpoints(eps(3));
  let slowUntil = Infinity;
  const latency = (ip: string, now: number) => (ip === '10.0.0.3' && now < slowUntil ? 51 : 1) + r() * 0.2;
  simulate(b, clock, 1000, 10, latency); // warm-up
  const slow = simulate(b, clock, 5000, 10, latency);
  const share = (slow.get('10.0.0.3') ?? 0) / 5000;
  t.true(share < 0.1, `slow share ${(share * 100).toFixed(1)}%`);
  slowUntil = clock.t;
  // Its estimate decays with the 10 s time constant; give it a minute of simulated traffic.
  const end = clock.t + 60_000;
  let back = 0;
  while (clock.t < end) {
    const c = simulate(b, clock, 2000, 10, latency);
    back = (c.get('10.0.0.3') ?? 0) / 2000;
  }
  t.true(back > 0.25, `share after recovery ${(back * 100).toFixed(1)}%`);
});

test('new endpoints start at the default RTT; the estimate jumps to a slower observation and decays toward a faster one', (t) => {
  const clock = { t: 0 };
  const b = new Balancer({ now: () => clock.t, random: rng(4) });
  b.setEndpoints(eps(1));
  t.is(b.snapshot()[0]!.ewmaMs, LINKERD_EWMA.defaultRttMs);
  const e = b.pick()!;
  b.done(e, 80, 'success');
  t.is(b.snapshot()[0]!.ewmaMs, 80, 'peak');
  clock.t += LINKERD_EWMA.decayMs;
  t.true(Math.abs(b.snapshot()[0]!.ewmaMs - 80 / Math.E) < 1e-9, 'decays with the 10 s time constant while unobserved');
});

test('a removed endpoint gets no new request; its in-flight request finishes and reports', (t) => {
  const clock = { t: 0 };
  const b = new Balancer({ now: () => clock.t, random: rng(5) });
  b.setEndpoints(eps(3));
  const held: BalancedEndpoint[] = [];
  for (let i = 0; i < 30; i++) held.push(b.pick()!);
  const gone = held.find((e) => e.ep.ip === '10.0.0.2')!;
  b.setEndpoints(eps(3).filter((e) => e.ip !== '10.0.0.2'));
  t.true(gone.removed);
  for (let i = 0; i < 1000; i++) t.not(b.pick()!.ep.ip, '10.0.0.2');
  b.done(gone, 1, 'success');
  t.deepEqual(b.snapshot().map((s) => s.ip), ['10.0.0.1', '10.0.0.3']);
  const kept = held.find((e) => e.ep.ip === '10.0.0.1')!;
  t.false(kept.removed, 'an endpoint that stays keeps its state object');
});

test('accrual turned on, or an endpoint\'s pod replaced at the same address: in-flight requests still count out, the new settings and names apply', (t) => {
  const clock = { t: 0 };
  const b = new Balancer({ now: () => clock.t, random: rng(7) });
  b.setEndpoints(eps(2));
  const held = [b.pick()!, b.pick()!, b.pick()!];
  b.setEndpoints(eps(2), { ...DEFAULT_ACCRUAL, maxFailures: 1, jitterRatio: 0 });
  for (const e of held) b.done(e, 1, 'success');
  t.deepEqual(b.snapshot().map((s) => s.inflight), [0, 0], 'nothing left in flight');
  const e = b.pick()!;
  b.done(e, 1, 'failure');
  t.is(b.snapshot().find((s) => s.ip === e.ep.ip)!.state, 'ejected', 'the new accrual settings apply');
  b.setEndpoints([{ ip: '10.0.0.1', port: 8080, pod: 'p0-new' }, { ip: '10.0.0.2', port: 8080, pod: 'p1' }]);
  t.is(b.snapshot()[0]!.pod, 'p0-new', 'a new pod at a reused address is named');
});

test('no endpoints: pick() is null', (t) => {
  const b = new Balancer();
  t.is(b.pick(), null);
  b.setEndpoints(eps(2));
  b.setEndpoints([]);
  t.is(b.pick(), null);
});

test('failure accrual: 7 consecutive failures eject; one probe after the backoff; failure doubles it; success restores', (t) => {
  const a = new FailureAccrual({ ...DEFAULT_ACCRUAL, jitterRatio: 0 });
  for (let i = 0; i < 6; i++) a.onResult(false, 0);
  a.onResult(true, 0);
  for (let i = 0; i < 6; i++) a.onResult(false, 0);
  t.is(a.state(0), 'ready', 'a success in between resets the count');
  a.onResult(false, 0);
  t.is(a.state(0), 'ejected');
  t.false(a.admits(999));
  a.onResult(true, 500); // sent before the ejection: ignored
  t.is(a.state(500), 'ejected');
  t.true(a.admits(1000), 'probation after 1 s');
  a.onSend(1000);
  t.false(a.admits(1000), 'only one probe');
  a.onResult(false, 1010);
  t.is(a.state(1010), 'ejected');
  t.false(a.admits(2900));
  t.true(a.admits(3010), 'the second backoff is 2 s');
  a.onSend(3010);
  a.onResult(true, 3020);
  t.is(a.state(3020), 'ready');
  for (let i = 0; i < 7; i++) a.onResult(false, 4000);
  t.true(a.admits(5000), 'after recovering, the backoff starts again at the minimum');
});

test('failure accrual in the balancer: an ejected endpoint is skipped while others serve; all ejected means none', (t) => {
  const clock = { t: 0 };
  const b = new Balancer({ now: () => clock.t, random: rng(6), accrual: { ...DEFAULT_ACCRUAL, maxFailures: 2, jitterRatio: 0 } });
  b.setEndpoints(eps(2));
  let failing = 0;
  while (failing < 2) {
    const e = b.pick()!;
    const bad = e.ep.ip === '10.0.0.1';
    b.done(e, 1, bad ? 'failure' : 'success');
    if (bad) failing++;
  }
  t.is(b.snapshot()[0]!.state, 'ejected');
  for (let i = 0; i < 100; i++) {
    const e = b.pick()!;
    t.is(e.ep.ip, '10.0.0.2');
    b.done(e, 1, 'success');
  }
  for (let i = 0; i < 2; i++) b.done(b.pick()!, 1, 'failure');
  t.is(b.pick(), null, 'every endpoint ejected');
  clock.t += 1000;
  const probe = b.pick();
  t.truthy(probe, 'a probe after the backoff');
});

test('both first draws held back by accrual: P2C again over the admitted endpoints only, by the same draws', (t) => {
  const draws: number[] = [];
  const b = new Balancer({ now: () => 0, random: () => draws.shift()!, accrual: { ...DEFAULT_ACCRUAL, maxFailures: 1, jitterRatio: 0 } });
  b.setEndpoints(eps(5));
  // Eject 10.0.0.1, then 10.0.0.2: draws 0, 0 pair the first two endpoints.
  for (let k = 0; k < 2; k++) {
    draws.push(0, 0);
    b.done(b.pick()!, null, 'failure');
  }
  t.deepEqual(b.snapshot().map((e) => e.state), ['ejected', 'ejected', 'ready', 'ready', 'ready']);
  // Draws 0.1, 0.1 pair the two ejected ones; then 0.9, 0 pair the 3rd and 1st admitted: .5 and .3, equal costs.
  draws.push(0.1, 0.1, 0.9, 0);
  const first = b.pick()!;
  t.is(first.ep.ip, '10.0.0.5');
  // Again; then 0.5, 0.6 pair the 2nd and 3rd admitted (.4, and .5 with a request in flight): the cheaper .4.
  draws.push(0.1, 0.1, 0.5, 0.6);
  t.is(b.pick()!.ep.ip, '10.0.0.4');
  t.is(draws.length, 0, 'two draws for the pair, two for the pair among the admitted');
});

test('with ready(): P2C chooses among ready endpoints (HTTP/2: a connected session); neither draw ready: any ready one, asking each endpoint once and connecting none; none ready: the cheaper available draw, else among all available', (t) => {
  const draws: number[] = [];
  const b = new Balancer({ now: () => 0, random: () => draws.shift()! });
  b.setEndpoints(eps(4));
  const readyIps = new Set(['10.0.0.3']);
  const asked: string[] = [];
  const ready = (e: BalancedEndpoint, drawn: boolean) => {
    asked.push(`${e.ep.ip}${drawn ? ' drawn' : ''}`);
    return readyIps.has(e.ep.ip);
  };
  // Draws 0, 0 pair .1 and .2, neither ready: then over the ready ones only, .3 alone (no draw).
  draws.push(0, 0);
  t.is(b.pick(ready)!.ep.ip, '10.0.0.3');
  t.deepEqual(asked, ['10.0.0.1 drawn', '10.0.0.2 drawn', '10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4'],
    'the pair as drawn (the caller may connect them), then each endpoint once, not drawn (it connects nothing)');
  t.is(draws.length, 0);
  // One of the pair ready: it, whatever the costs (.3 has a request in flight, .1 none).
  asked.length = 0;
  draws.push(0, 0.5); // .1 and .3
  t.is(b.pick(ready)!.ep.ip, '10.0.0.3');
  t.deepEqual(asked, ['10.0.0.1 drawn', '10.0.0.3 drawn']);
  // Both ready: the cheaper, as without ready().
  readyIps.add('10.0.0.1');
  draws.push(0, 0.5);
  t.is(b.pick(ready)!.ep.ip, '10.0.0.1');
  // None ready (a cold Service): the cheaper of the pair, whose connects the draws started; no new
  // draw, which could choose a third endpoint and open a third connection.
  readyIps.clear();
  asked.length = 0;
  draws.push(0.5, 0.5); // the pair .3/.2, neither ready, none ready at all: .2 (nothing in flight; .3 has)
  draws.push(0, 0.99); // left for a second pair: .1/.4 over all four would choose .4, a third endpoint
  t.is(b.pick(ready)!.ep.ip, '10.0.0.2');
  t.is(draws.length, 2, 'no second pair drawn');
  draws.length = 0;
  t.deepEqual(asked.filter((a) => a.endsWith('drawn')), ['10.0.0.3 drawn', '10.0.0.2 drawn'], 'only the pair may connect');
  // The pair's one available endpoint when the other is ejected; neither available: among all available.
  const c = new Balancer({ now: () => 0, random: () => draws.shift()!, accrual: { ...DEFAULT_ACCRUAL, maxFailures: 1, jitterRatio: 0 } });
  c.setEndpoints(eps(3));
  draws.push(0, 0);
  c.done(c.pick()!, null, 'failure'); // ejects .1
  draws.push(0, 0); // the pair .1 (ejected) and .2, neither ready
  t.is(c.pick(() => false)!.ep.ip, '10.0.0.2');
  draws.push(0, 0.5); // the pair .1 (ejected) and .3, ready: .3
  const three = c.pick(() => true)!;
  t.is(three.ep.ip, '10.0.0.3');
  c.done(three, null, 'failure'); // ejects .3
  draws.push(0, 0.5); // the pair .1/.3, both ejected, none ready: among all available, .2 alone
  t.is(c.pick(() => false)!.ep.ip, '10.0.0.2');
  t.is(draws.length, 0);
  // Failure accrual still applies over readiness: an ejected endpoint is not chosen even when ready.
  const a = new Balancer({ now: () => 0, random: () => draws.shift()!, accrual: { ...DEFAULT_ACCRUAL, maxFailures: 1, jitterRatio: 0 } });
  a.setEndpoints(eps(2));
  draws.push(0, 0);
  a.done(a.pick()!, null, 'failure'); // ejects .1
  draws.push(0, 0);
  t.is(a.pick(() => true)!.ep.ip, '10.0.0.2');
  // A single endpoint is the one, ready or not (its request starts the connection).
  const one = new Balancer({ now: () => 0 });
  one.setEndpoints(eps(1));
  t.is(one.pick(() => false)!.ep.ip, '10.0.0.1');
});

test('accrual annotations: Linkerd\'s names and defaults; bad values reported, defaults kept', (t) => {
  t.is(accrualFromAnnotations({}).params, null);
  t.deepEqual(accrualFromAnnotations({ 'balancer.linkerd.io/failure-accrual': 'consecutive' }).params, DEFAULT_ACCRUAL);
  const r = accrualFromAnnotations({
    'balancer.linkerd.io/failure-accrual': 'consecutive',
    'balancer.linkerd.io/failure-accrual-consecutive-max-failures': '3',
    'balancer.linkerd.io/failure-accrual-consecutive-min-penalty': '250ms',
    'balancer.linkerd.io/failure-accrual-consecutive-max-penalty': '1m',
    'balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio': '0',
  });
  t.deepEqual(r, { params: { maxFailures: 3, minPenaltyMs: 250, maxPenaltyMs: 60_000, jitterRatio: 0 }, errors: [] });
  const bad = accrualFromAnnotations({
    'balancer.linkerd.io/failure-accrual': 'consecutive',
    'balancer.linkerd.io/failure-accrual-consecutive-max-failures': 'seven',
    'balancer.linkerd.io/failure-accrual-consecutive-min-penalty': '1 second',
  });
  t.deepEqual(bad.params, DEFAULT_ACCRUAL);
  t.is(bad.errors.length, 2);
  t.regex(bad.errors[1]!, /min-penalty: "1 second" is not a duration; write it like 500ms/);
  t.regex(accrualFromAnnotations({ 'balancer.linkerd.io/failure-accrual': 'rate' }).errors[0]!, /only mode is "consecutive"/);
});

test('durations', (t) => {
  t.is(parseDuration('500ms'), 500);
  t.is(parseDuration('1m30s'), 90_000);
  t.is(parseDuration('1.5s'), 1500);
  t.is(parseDuration('0'), 0);
  for (const bad of ['', '10', 's', '1w', '-1s', '1s ', 'ms10']) t.throws(() => parseDuration(bad === '1s ' ? '1x' : bad), { message: /is not a duration/ }, bad);
});

test('durations: days, as Linkerd reads its annotations (1d, 2d); a duration below 1 ms is refused, not taken as 0 (which means none)', (t) => {
  t.is(parseDuration('1d'), 86_400_000);
  t.is(parseDuration('2d12h'), 216_000_000);
  for (const tiny of ['0.4ms', '0.5ms', '0.0001s']) t.throws(() => parseDuration(tiny, 'timeout.linkerd.io/request'), { message: `timeout.linkerd.io/request: ${JSON.stringify(tiny)} is below 1ms, the finest a duration can be here; write 1ms or more, or 0 for none` }, tiny);
  t.is(parseDuration('0.0s'), 0, 'zero written with a unit is zero');
  t.is(parseDuration('1.4ms'), 1, 'rounded to the millisecond when not below it');
  const p = policyFromAnnotations({ 'timeout.linkerd.io/idle': '1d', 'timeout.linkerd.io/request': '0.1ms' }, { kind: 'Service', namespace: 'shop', name: 'api' });
  t.is(p.timeouts?.idleMs, 86_400_000);
  t.is(p.timeouts?.requestMs, undefined);
  t.deepEqual(p.errors, ['timeout.linkerd.io/request: "0.1ms" is below 1ms, the finest a duration can be here; write 1ms or more, or 0 for none']);
});

test('a failure without a response counts as a 1 s peak: P2C keeps away from the endpoint until it decays', (t) => {
  const clock = { t: 0 };
  const b = new Balancer({ now: () => clock.t, random: rng(3) });
  b.setEndpoints(eps(2));
  const dead = b.snapshot()[0]!.ip;
  // The first pick of the dead endpoint fails at once (connection refused).
  let e = b.pick()!;
  while (e.ep.ip !== dead) {
    b.done(e, 1, 'success');
    e = b.pick()!;
  }
  b.done(e, null, 'failure');
  t.is(b.snapshot().find((s) => s.ip === dead)!.ewmaMs, FAILURE_PENALTY_MS);
  // Steady traffic at 1 ms: the dead endpoint's peak decays (tau 10 s) to the live one's 1 ms
  // after ln(1000) x 10 s = 69 s; until then every pick goes to the live endpoint.
  const start = clock.t;
  let again = -1;
  while (clock.t - start < 80_000 && again < 0) {
    clock.t += 100;
    const p = b.pick()!;
    if (p.ep.ip === dead) again = clock.t - start;
    b.done(p, 1, 'success');
  }
  t.true(again > 60_000 && again < 75_000, `tried again after ${again} ms`);
});

test('failure accrual: a probe the client gave up on (cancel) frees the probation slot; the endpoint is not held back for good', (t) => {
  const clock = { t: 0 };
  const b = new Balancer({ now: () => clock.t, random: rng(7), accrual: { ...DEFAULT_ACCRUAL, maxFailures: 1, jitterRatio: 0 } });
  b.setEndpoints(eps(1));
  b.done(b.pick()!, 1, 'failure');
  t.is(b.pick(), null, 'ejected');
  clock.t += 1000;
  const probe = b.pick();
  t.truthy(probe, 'one probe after the backoff');
  // The client closed before any response (or the HTTP/1 dispatcher's eager pick went unused).
  b.done(probe!, null, 'cancel');
  clock.t += 60_000;
  const next = b.pick();
  t.truthy(next, 'a cancelled probe decides nothing: another probe may go');
  b.done(next!, 1, 'success');
  t.is(b.snapshot()[0]!.state, 'ready');
});

test('a retry\'s pick avoids the endpoint that failed when another is available; with none other (or all others held back) it may take it again', (t) => {
  const clock = { t: 0 };
  const b = new Balancer({ now: () => clock.t, random: rng(8), accrual: { ...DEFAULT_ACCRUAL, maxFailures: 1, jitterRatio: 0 } });
  b.setEndpoints(eps(3));
  for (let i = 0; i < 50; i++) {
    const first = b.pick()!;
    b.done(first, 1, 'success');
    const retry = b.pick(undefined, first)!;
    t.not(retry.key, first.key);
    b.done(retry, 1, 'success');
  }
  const one = new Balancer({ now: () => 0 });
  one.setEndpoints(eps(1));
  const only = one.pick()!;
  one.done(only, 1, 'success');
  t.is(one.pick(undefined, only), only, 'the only endpoint');
  b.setEndpoints(eps(2));
  const [x, y] = [b.pick()!, b.pick()!];
  b.done(x, 1, 'success');
  b.done(y, 1, 'success');
  const bad = x.key === '10.0.0.1:8080' ? x : y;
  const other = bad === x ? y : x;
  const o = b.pick(undefined, bad)!;
  t.is(o, other);
  b.done(o, 1, 'failure'); // ejects the other
  t.is(b.pick(undefined, bad), bad, 'the others held back: the avoided one rather than none');
});
