// authenticateAgent (src/identity/authorize.ts), the judgement of a TokenReview answer that both
// the identity service and the controller's --agent-auth token make: the audience asked for must
// come back in status.audiences (the API reference: a client that sets spec.audiences must check
// it, or the authenticator may not be audience-aware), else the token could be one meant for any
// other service, replayed.
import test from 'ava';
import { authenticateAgent, NODE_NAME_EXTRA, type ReviewStatus } from '../src/identity/authorize.ts';

const AGENT = { namespace: 'mesh-agent', name: 'mesh-agent-agent' };
const AUD = 'mesh-agent-identity';
const review = (o: Partial<ReviewStatus> = {}): ReviewStatus => ({
  authenticated: true,
  user: { username: 'system:serviceaccount:mesh-agent:mesh-agent-agent', extra: { [NODE_NAME_EXTRA]: ['node-1'] } },
  audiences: [AUD],
  ...o,
});

test('an authenticated agent token for the audience, bound to a node: its node', (t) => {
  t.deepEqual(authenticateAgent(review(), AGENT, AUD), { ok: true, node: 'node-1' });
  t.deepEqual(authenticateAgent(review({ audiences: ['other', AUD] }), AGENT, AUD), { ok: true, node: 'node-1' });
});

test('an authenticated answer without status.audiences is refused (401), naming the audience-unaware authenticator and the fix', (t) => {
  for (const audiences of [undefined, [] as string[]]) {
    const r = authenticateAgent(review({ audiences }), AGENT, AUD);
    t.false(r.ok);
    if (r.ok) return;
    t.is(r.status, 401);
    t.regex(r.reason, /the API server's TokenReview accepted the token without saying it is for audience mesh-agent-identity \(no status\.audiences\)/);
    t.regex(r.reason, /not audience-aware/);
    t.regex(r.reason, /webhook token authenticator/);
  }
});

test('an authenticated answer with other audiences only is refused (401), naming them', (t) => {
  const r = authenticateAgent(review({ audiences: ['https://kubernetes.default.svc'] }), AGENT, AUD);
  t.false(r.ok);
  if (r.ok) return;
  t.is(r.status, 401);
  t.regex(r.reason, /the token is for \["https:\/\/kubernetes\.default\.svc"\], not audience mesh-agent-identity; mount a projected token with that audience/);
});

test('the audience is checked before who the token is: a non-audience-aware answer for another ServiceAccount is still 401', (t) => {
  const r = authenticateAgent(review({ audiences: undefined, user: { username: 'system:serviceaccount:shop:web' } }), AGENT, AUD);
  t.like(r, { ok: false, status: 401 });
});
