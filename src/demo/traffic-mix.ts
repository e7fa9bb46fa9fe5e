// The vote bot's fixed round of requests, and the success rates it implies (pure). The demo
// prints these next to what the mesh measured, and the e2e test holds the two together.
import { BROKEN_VOTE, EMOJI } from './emoji-list.ts';

export type BotRequest = { path: string };

const votable = EMOJI.filter((e) => e.shortcode !== BROKEN_VOTE);

/** Round n: list, two votes that succeed, one for the doughnut (fails), the leaderboard. */
export function botRound(n: number): BotRequest[] {
  const pick = (i: number) => votable[(2 * n + i) % votable.length].shortcode;
  const vote = (code: string) => ({ path: `/api/vote?choice=${encodeURIComponent(code)}` });
  return [{ path: '/api/list' }, vote(pick(0)), vote(pick(1)), vote(BROKEN_VOTE), { path: '/api/leaderboard' }];
}

export const REQUESTS_PER_ROUND = 5;

/**
 * What each deployment answers in one round, in the order it receives the requests (the bot
 * sends one request at a time and the web calls its back ends in turn, so this is the order):
 * - web (HTTP from vote-bot): list, vote, vote, doughnut vote (a 500), leaderboard.
 * - voting (gRPC from web): Vote, Vote, the doughnut's Vote (grpc-status 2), Results.
 * - emoji (gRPC from web): ListAll, 3 FindByShortcode, ListAll: all succeed.
 * - mailer (SMTP from web): one connection per successful vote, opaque TCP: no success rate.
 */
export const ROUND_OUTCOMES: Readonly<Record<string, readonly boolean[]>> = {
  web: [true, true, true, false, true],
  voting: [true, true, false, true],
  emoji: [true, true, true, true, true],
};

/** web 4/5, voting 3/4, emoji 1. */
export const EXPECTED_SUCCESS: Readonly<Record<string, number>> = Object.fromEntries(
  Object.entries(ROUND_OUTCOMES).map(([d, o]) => [d, o.filter(Boolean).length / o.length]),
);

/**
 * The fewest and most failures any n consecutive requests to a deployment can hold: the mix
 * repeats exactly, so a count over any stretch of the run (a stat window, a report) must fall
 * in this range. Exact, not statistical.
 */
export function failureRange(deployment: string, n: number): [number, number] {
  const round = ROUND_OUTCOMES[deployment];
  if (!round) throw new Error(`no traffic mix for deployment ${deployment}; known: ${Object.keys(ROUND_OUTCOMES).join(', ')}`);
  let min = Infinity;
  let max = -Infinity;
  for (let start = 0; start < round.length; start++) {
    let failures = 0;
    for (let i = 0; i < n; i++) if (!round[(start + i) % round.length]) failures++;
    min = Math.min(min, failures);
    max = Math.max(max, failures);
  }
  return [min, max];
}

/** Requests per second each deployment receives when the bot sends `rps` to the web. */
export function expectedRps(botRps: number): Record<string, number> {
  const rounds = botRps / REQUESTS_PER_ROUND;
  return { web: botRps, voting: 4 * rounds, emoji: 5 * rounds };
}
