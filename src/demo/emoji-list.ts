// The emoji the demo votes on (a subset of emojivoto's). :doughnut: is the one whose votes fail.
import type { Emoji } from './proto.ts';

export const EMOJI: readonly Emoji[] = [
  { unicode: '😂', shortcode: ':joy:' },
  { unicode: '🍩', shortcode: ':doughnut:' },
  { unicode: '😎', shortcode: ':sunglasses:' },
  { unicode: '🤓', shortcode: ':nerd_face:' },
  { unicode: '👻', shortcode: ':ghost:' },
  { unicode: '🦄', shortcode: ':unicorn:' },
  { unicode: '🐙', shortcode: ':octopus:' },
  { unicode: '🌮', shortcode: ':taco:' },
  { unicode: '🚀', shortcode: ':rocket:' },
  { unicode: '🎉', shortcode: ':tada:' },
];

/** As in emojivoto, voting for the doughnut is broken, so the mesh has a failure to show. */
export const BROKEN_VOTE = ':doughnut:';
