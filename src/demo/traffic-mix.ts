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
 * What each deployment should answer, per round:
 * - web (HTTP from vote-bot): 5 requests, the doughnut vote is a 500: 4/5.
 * - voting (gRPC from web): 3 Vote + 1 Results, the doughnut Vote fails: 3/4.
 * - emoji (gRPC from web): 2 ListAll + 3 FindByShortcode, all succeed: 5/5.
 * - mailer (SMTP from web): one connection per successful vote, opaque TCP: no success rate.
 */
export const EXPECTED_SUCCESS: Readonly<Record<string, number>> = { web: 4 / 5, voting: 3 / 4, emoji: 1 };

/** Requests per second each deployment receives when the bot sends `rps` to the web. */
export function expectedRps(botRps: number): Record<string, number> {
  const rounds = botRps / REQUESTS_PER_ROUND;
  return { web: botRps, voting: 4 * rounds, emoji: 5 * rounds };
}
