// The agent's certificate life cycle on a manual clock, with an identity service stand-in that
// signs with a real issuer (or fails on demand): fetched when a pod's identity appears, renewed
// at half life, retried with backoff capped at 150 s, the old certificate serving until it
// expires and withdrawn then; what the proxies' store makes of it (wait, refuse with the reason).
import test from 'ava';
import { backoffMs, IdentityManager, ISSUER_END_RENEWAL_MS, MAX_BACKOFF_MS, MIN_RENEWAL_MS, refreshAt, renewalAt } from '../src/identity/manager.ts';
import { CredentialStore, type CredentialUpdate } from '../src/identity/credentials.ts';
import { createIssuer, createTrustAnchor, loadIssuer, signWorkloadCsr } from '../src/identity/x509.ts';
import { spiffeId, workloadId } from '../src/identity/spiffe.ts';
import { IdentityService } from '../src/identity/service.ts';
import { X509Certificate } from 'node:crypto';
import { waitFor } from './helpers/until.ts';
import { ManualClock } from './helpers/manual-clock.ts';

const LIFE = 120_000;
const web = workloadId('cluster.local', 'shop', 'web');
const WEB = spiffeId(web);

/** `issuerLifeMs`: the issuer ends this long after the clock's now; certificates are cut to its end, as the identity service cuts them. */
async function setUp(clock = new ManualClock(), o: { issuerLifeMs?: number } = {}) {
  const now = clock.now();
  const anchor = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
  const iss = await createIssuer(anchor, { trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + (o.issuerLifeMs ?? 86_400_000)) });
  const issuer = await loadIssuer(iss.certPem, iss.keyPem, anchor.certPem);
  const service = { down: false, calls: 0, life: LIFE };
  const updates: CredentialUpdate[] = [];
  const store = new CredentialStore(anchor.certPem);
  const logs: string[] = [];
  const m = new IdentityManager({
    clock,
    client: {
      async certify(id, csr) {
        service.calls++;
        if (service.down) throw new Error('identity service at 10.0.0.1:8080: ECONNREFUSED');
        const end = o.issuerLifeMs === undefined ? clock.now() + service.life : Math.min(clock.now() + service.life, issuer.notAfter.getTime());
        if (o.issuerLifeMs !== undefined && end <= clock.now()) throw new Error('the identity service refused (503): the issuer certificate expired');
        const pem = await signWorkloadCsr(issuer, csr, { id, notBefore: new Date(clock.now() - 30_000), notAfter: new Date(end) });
        return { certificate: pem, chain: [iss.certPem], notBefore: '', notAfter: '', serial: new X509Certificate(pem).serialNumber };
      },
    },
    publish: (u) => {
      updates.push(u);
      store.apply(u);
    },
    log: (_l, msg) => logs.push(msg),
  });
  return { m, clock, service, updates, store, logs };
}

test('renewal at half life; backoff doubles from 1 s to at most 150 s, with jitter', (t) => {
  t.is(refreshAt(1000, 3000), 2000);
  t.is(backoffMs(1, () => 0.5), 1000);
  t.is(backoffMs(2, () => 0.5), 2000);
  t.is(backoffMs(5, () => 0.5), 16_000);
  t.is(backoffMs(20, () => 0.5), MAX_BACKOFF_MS);
  t.is(backoffMs(20, () => 1), MAX_BACKOFF_MS, 'jitter never passes the cap');
  t.is(backoffMs(1, () => 0), 800);
});

test('renewalAt: half life; never sooner than 5 s after it came (a lifetime under 30 s, backdated 30 s, is past half at once); cut to the issuer\'s end, at most once a minute, and at its end at the latest', (t) => {
  const now = 1_000_000_000;
  const far = now + 365 * 86_400_000;
  t.is(renewalAt({ notBefore: now - 30_000, notAfter: now + 120_000, issuerNotAfter: far }, now), now + 45_000);
  t.is(renewalAt({ notBefore: now - 30_000, notAfter: now + 10_000, issuerNotAfter: far }, now), now + MIN_RENEWAL_MS);
  t.is(MIN_RENEWAL_MS, 5_000);
  // Cut: it ends with its issuer; a renewal gets no later end until the issuer is rotated.
  t.is(renewalAt({ notBefore: now - 30_000, notAfter: now + 3_600_000, issuerNotAfter: now + 3_600_000 }, now), now + 1_785_000, 'half life while that is over a minute');
  t.is(renewalAt({ notBefore: now - 30_000, notAfter: now + 100_000, issuerNotAfter: now + 100_000 }, now), now + ISSUER_END_RENEWAL_MS);
  t.is(ISSUER_END_RENEWAL_MS, 60_000);
  t.is(renewalAt({ notBefore: now - 30_000, notAfter: now + 20_000, issuerNotAfter: now + 20_000 }, now), now + 20_000, 'at its end, not after');
  t.is(renewalAt({ notBefore: now - 30_000, notAfter: now + 20_000, issuerNotAfter: now + 20_500 }, now), now + 20_000, 'X.509 times have whole seconds');
});

test('near the issuer\'s end (certificates cut to it) renewals stay at least a minute apart, not a loop of renewals at once, and the agent says to rotate the issuer', async (t) => {
  const s = await setUp(new ManualClock(), { issuerLifeMs: 10 * 60_000 });
  s.service.life = 86_400_000;
  s.m.want([WEB]);
  await waitFor(() => s.store.get(WEB) !== null);
  const end = Date.parse(s.m.states()[0]!.notAfter!);
  t.true(end - s.clock.now() <= 10 * 60_000, 'cut to the issuer\'s end');
  const calls = [s.clock.now()];
  // Up to a second before the issuer's end, each renewal as its timer fires (bounded: the old code renewed at once, forever).
  for (let i = 0; i < 100 && s.clock.now() < end - 1000; i++) {
    s.clock.advance(Math.min(s.clock.pending()[0]!, end - 1000 - s.clock.now()));
    // A renewal under way has no next one yet (fetch clears it at once).
    if (s.m.states()[0]!.nextRenewal !== null) continue;
    calls.push(s.clock.now());
    await waitFor(() => s.m.states()[0]!.nextRenewal !== null);
  }
  const gaps = calls.slice(1).map((c, i) => c - calls[i]!);
  t.true(gaps.length >= 3 && gaps.length <= 6, `renewed ${gaps.length} times in the issuer's last 10 minutes: ${gaps}`);
  t.true(gaps.every((g) => g >= ISSUER_END_RENEWAL_MS), `at least a minute apart: ${gaps}`);
  t.is(s.m.states()[0]!.nextRenewal, new Date(end).toISOString(), 'the last one at its end (a rotated issuer gives a new one then)');
  t.like(s.m.states()[0], { cutByIssuer: true, issuerNotAfter: new Date(end).toISOString() });
  const warned = s.logs.filter((l) => l.includes('rotate the issuer'));
  t.is(warned.length, 1, 'said once in ten minutes, not at each renewal');
  t.regex(warned[0]!, /the identity service's issuer ends at .*: certificates are cut to its end, renewed at most once a minute each, and none can be issued after it; rotate the issuer now/);
  const { identityHealth } = await import('../src/agent/health.ts');
  const reasons = identityHealth({ identityService: '10.0.0.1:8080', trustAnchors: [], certificates: s.m.states().concat(s.m.states()) });
  t.is(reasons.length, 1, `one line for the issuer, however many certificates: ${reasons}`);
  t.regex(reasons[0]!, /^identity: the identity service's issuer ends at .* \(in \d+ s\): certificates are cut to its end; rotate the issuer now \(docs\/identity\.md, rotating the issuer\)$/);
});

test('a new identity is fetched at once (a waiting connection gets it), renewed at half life with a new key and serial', async (t) => {
  const s = await setUp();
  const waiting = s.store.wait(WEB, 5000);
  s.m.want([WEB]);
  t.is(s.updates[0]!.state, 'pending');
  const first = await waiting;
  t.is(s.store.get(WEB)?.serial, first.serial);
  const st = s.m.states()[0]!;
  t.like(st, { identity: WEB, state: 'ready', failures: 0 });
  // Renewal is due half way through [notBefore, notAfter] (notBefore is 30 s back).
  t.is(Date.parse(st.nextRenewal!), Date.parse(st.notBefore!) + LIFE / 2 + 15_000);
  s.clock.advance(Date.parse(st.nextRenewal!) - s.clock.now() - 1);
  t.is(s.service.calls, 1, 'not before it is due');
  s.clock.advance(1);
  await waitFor(() => s.updates.filter((u) => u.state === 'ready').length === 2);
  const second = s.m.states()[0]!;
  t.not(second.serial, st.serial);
  t.is(s.store.get(WEB)?.serial, second.serial ?? undefined);
});

test('identity service down: no certificate yet -> refused with the reason, retried with backoff; it comes when the service returns', async (t) => {
  const s = await setUp();
  s.service.down = true;
  s.m.want([WEB]);
  await waitFor(() => s.updates.some((u) => u.state === 'unavailable'));
  await t.throwsAsync(s.store.wait(WEB, 5000), { message: /no certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/web: identity service at 10\.0\.0\.1:8080: ECONNREFUSED/ });
  t.like(s.m.states()[0], { state: 'failing', failures: 1 });
  const delays: number[] = [];
  for (let i = 0; i < 10; i++) {
    const d = s.clock.pending()[0]!;
    delays.push(d);
    s.clock.advance(d);
    await waitFor(() => s.m.states()[0]!.failures === i + 2);
  }
  t.true(delays.every((d, i) => i === 0 || d >= delays[i - 1]! * 0.6), `delays grow: ${delays.join(',')}`);
  t.true(delays.every((d) => d <= MAX_BACKOFF_MS), `at most 150 s apart: ${delays}`);
  t.true(delays.at(-1)! >= 0.8 * MAX_BACKOFF_MS, `reaches the cap: ${delays}`);
  s.service.down = false;
  s.clock.advance(s.clock.pending()[0]!);
  await waitFor(() => s.store.get(WEB) !== null);
  t.like(s.m.states()[0], { state: 'ready', failures: 0, lastError: null });
});

test('renewal failing: the certificate in hand serves until it expires, then it is withdrawn with the reason', async (t) => {
  const s = await setUp();
  s.m.want([WEB]);
  await waitFor(() => s.store.get(WEB) !== null);
  const serial = s.store.get(WEB)!.serial;
  s.service.down = true;
  const notAfter = Date.parse(s.m.states()[0]!.notAfter ?? '');
  s.clock.advance(Date.parse(s.m.states()[0]!.nextRenewal!) - s.clock.now());
  await waitFor(() => s.m.states()[0]!.failures === 1);
  t.is(s.store.get(WEB)?.serial, serial, 'still served');
  t.like(s.m.states()[0], { state: 'ready', failures: 1 });
  t.false(s.updates.some((u) => u.state === 'unavailable'));
  // Retries keep failing up to the expiry.
  while (s.clock.now() < notAfter) {
    const d = Math.min(s.clock.pending()[0]!, notAfter - s.clock.now());
    const before = s.m.states()[0]!.failures;
    s.clock.advance(d);
    if (s.clock.now() < notAfter) await waitFor(() => s.m.states()[0]!.failures > before);
  }
  await waitFor(() => s.store.get(WEB) === null);
  const gone = s.updates.at(-1)!;
  t.is(gone.state, 'unavailable');
  t.regex((gone as { reason: string }).reason, /its certificate expired at .* and the identity service has not given a new one \(identity service at 10\.0\.0\.1:8080: ECONNREFUSED\)/);
  t.true(s.logs.some((l) => /the current certificate serves until/.test(l)));
});

test('a certificate that has already expired when it comes is refused: never presented, retried after the backoff, not at once', async (t) => {
  const s = await setUp();
  // The identity service's clock is behind (or its issuer has run out): it ends a second ago.
  s.service.life = -1000;
  s.m.want([WEB]);
  await waitFor(() => s.m.states()[0]!.failures === 1);
  t.is(s.store.get(WEB), null, 'no expired certificate in the store');
  t.false(s.updates.some((u) => u.state === 'ready'));
  t.like(s.m.states()[0], { state: 'failing', serial: null });
  t.regex(s.m.states()[0]!.lastError ?? '', /the identity service issued a certificate that is not valid now/);
  t.true(s.clock.pending()[0]! >= 800, `retried after the backoff, not at once: ${s.clock.pending()}`);
  t.is(s.service.calls, 1);
  s.service.life = LIFE;
  s.clock.advance(s.clock.pending()[0]!);
  await waitFor(() => s.store.get(WEB) !== null);
});

/** Node's timers: a delay past 2^31-1 ms fires at 2^31-1 ms (the agent's real clock clamps so, manager.ts). */
class ClampingClock extends ManualClock {
  override setTimeout(fn: () => void, ms: number) {
    return super.setTimeout(fn, Math.min(ms, 2 ** 31 - 1));
  }
}

test('a certificate of more than 24.8 days whose renewal fails serves until its own end, not until a clamped timer fires', async (t) => {
  const DAY = 86_400_000;
  const s = await setUp(new ClampingClock());
  s.service.life = 40 * DAY;
  s.m.want([WEB]);
  await waitFor(() => s.store.get(WEB) !== null);
  const notAfter = Date.parse(s.m.states()[0]!.notAfter!);
  s.service.down = true;
  // Past 24.8 days (the clamp) and well before its end (40 days): the renewal at 20 days fails.
  s.clock.advance(30 * DAY);
  await waitFor(() => s.m.states()[0]!.failures === 1);
  t.true(s.clock.now() < notAfter);
  t.not(s.store.get(WEB), null, 'a valid certificate is not withdrawn');
  t.false(s.updates.some((u) => u.state === 'unavailable'), 'never withdrawn');
});

test('an identity whose pods left is dropped: its waiters are told, nothing more is fetched', async (t) => {
  const s = await setUp();
  s.service.down = true;
  s.m.want([WEB]);
  await waitFor(() => s.m.states()[0]?.failures === 1);
  s.m.want([]);
  t.is(s.updates.at(-1)!.state, 'gone');
  t.deepEqual(s.m.states(), []);
  t.deepEqual(s.clock.pending(), [], 'no retry left scheduled');
});

test('status: trust anchors within 30 days of their end warn; a failing or stale certificate makes the agent degraded with what is left', async (t) => {
  const { anchorsStatus } = await import('../src/identity/anchors.ts');
  const { identityHealth } = await import('../src/agent/health.ts');
  const now = Date.now();
  const day = 86_400_000;
  const anchor = (days: number) => createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - day), notAfter: new Date(now + days * day) });
  const [far, near] = await Promise.all([anchor(300), anchor(10)]);
  const st = anchorsStatus(far.certPem + near.certPem, now);
  t.is(st[0]!.warning, undefined);
  t.true(st[0]!.daysLeft >= 299);
  t.regex(st[1]!.warning!, /^trust anchor CN=root\.identity\.mesh-agent\.cluster\.local expires in \d days \(.*\); rotate it now/);
  t.regex(anchorsStatus(far.certPem, now + 400 * day)[0]!.warning!, /expired at .*: no certificate under it verifies/);
  const reasons = identityHealth({
    identityService: '10.0.0.1:8080',
    trustAnchors: st,
    certificates: [
      { identity: WEB, state: 'ready', failures: 0 },
      { identity: 'spiffe://cluster.local/ns/shop/sa/db', state: 'ready', failures: 3, lastError: 'ECONNREFUSED', remainingSeconds: 4000, notAfter: 'T1', nextRenewal: 'T2' },
      { identity: 'spiffe://cluster.local/ns/shop/sa/new', state: 'failing', failures: 2, lastError: 'ECONNREFUSED', nextRenewal: 'T3' },
    ],
  });
  t.is(reasons.length, 3);
  t.regex(reasons[0]!, /renewing spiffe:\/\/cluster\.local\/ns\/shop\/sa\/db failed 3 times \(ECONNREFUSED\); its certificate serves 4000s more \(until T1\); next attempt T2/);
  t.regex(reasons[1]!, /no certificate for spiffe:\/\/cluster\.local\/ns\/shop\/sa\/new \(2 attempts failed: ECONNREFUSED\); its pods' connections to meshed pods of other nodes are refused until the identity service 10\.0\.0\.1:8080 answers/);
  t.regex(reasons[2]!, /expires in \d days/);
  t.deepEqual(identityHealth(null), []);
  // Certificates cut to an end that is the trust anchor's (the service cuts to the issuer's or its
  // anchor's, whichever is sooner): the anchor is what to rotate, said once, not the issuer.
  const cutToAnchor = identityHealth({
    identityService: '10.0.0.1:8080',
    trustAnchors: st,
    certificates: [{ identity: WEB, state: 'ready', failures: 0, cutByIssuer: true, issuerNotAfter: st[1]!.notAfter, remainingSeconds: 600 }],
  });
  t.is(cutToAnchor.length, 1, cutToAnchor.join('\n'));
  t.regex(cutToAnchor[0]!, /^identity: the trust anchor CN=root\.identity\.mesh-agent\.cluster\.local ends at .* \(in 600 s\): certificates are cut to its end; rotate the trust anchor now \(docs\/identity\.md, rotating the trust anchor\)$/);
});

test('a trust anchor that ends before the issuer cuts certificates too: the agent knows them cut (a minute apart, told to rotate), from the service\'s answer', async (t) => {
  // The service cuts to the issuer's end or its anchor's, whichever is sooner (loadIssuer); the
  // chain it sends holds only the issuer, which here outlives the anchor by a day.
  const clock = new ManualClock();
  const now = clock.now();
  const anchor = await createTrustAnchor({ trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 10 * 60_000) });
  const iss = await createIssuer(anchor, { trustDomain: 'cluster.local', notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000) });
  const service = new IdentityService({
    issuer: await loadIssuer(iss.certPem, iss.keyPem, anchor.certPem, new Date(now)),
    trustDomain: 'cluster.local',
    kube: {} as never,
    agent: { namespace: 'mesh-agent', name: 'mesh-agent' },
    self: workloadId('cluster.local', 'mesh-agent', 'mesh-agent-identity'),
    log: () => {},
    now: () => clock.now(),
  });
  const logs: string[] = [];
  const m = new IdentityManager({ clock, client: { certify: (id, csr) => service.issue(id, csr) }, publish: () => {}, log: (_l, msg) => logs.push(msg) });
  m.want([WEB]);
  await waitFor(() => m.states()[0]?.state === 'ready');
  const st = m.states()[0]!;
  t.true(Math.abs(Date.parse(st.notAfter!) - (now + 10 * 60_000)) <= 1000, `cut to the anchor's end: ${st.notAfter}`);
  t.like(st, { cutByIssuer: true, issuerNotAfter: st.notAfter });
  t.true(logs.some((l) => l.includes('rotate the issuer')), logs.join('\n'));
  m.stop();
});
