// The connection cap against the process's open-file limit. Node raises its soft limit to the
// hard one at start, so the hard limit the container runtime gives is what the agent has (often
// 1,048,576, but containerd 2 leaves its default 524,288, and a host may set 4,096 or less). A
// proxied connection holds up to three fds, so a cap the limit cannot hold ends in accept() and
// socket() failing with EMFILE: libuv then resets new connections at random, uncounted, where the
// cap refuses them cleanly and counts them (listener.ts). So the agent lowers its cap to what the
// limit holds and says so.
import * as fs from 'node:fs';

/**
 * Fds one proxied connection may hold: the client's socket, its duplicate when the addon drives
 * it (--native-io, docs/proxy.md: Node's socket stays as the connection's shell) and the upstream.
 */
export function fdsPerConnection(nativeIo: boolean): number {
  return nativeIo ? 3 : 2;
}

/** Fds the agent keeps for everything else: BPF maps and links, listeners, loops, the controller, pooled upstreams. */
export const RESERVED_FDS = 256;

/** The soft "Max open files" of /proc/PID/limits; Infinity when unlimited, null when absent. */
export function parseOpenFilesLimit(limits: string): number | null {
  const m = /^Max open files\s+(\S+)/m.exec(limits);
  if (!m) return null;
  if (m[1] === 'unlimited') return Infinity;
  const n = Number(m[1]);
  return Number.isInteger(n) && n >= 0 ? n : null;
}

export function openFilesLimit(): number | null {
  try {
    return parseOpenFilesLimit(fs.readFileSync('/proc/self/limits', 'utf8'));
  } catch {
    return null;
  }
}

export interface ConnectionCap {
  /** The cap to use: the one asked for, or what the limit holds. */
  maxConnections: number;
  /** Why it is lower than asked, and what to do (null: as asked). */
  warning: string | null;
}

/**
 * The connection cap the open-file limit holds. Throws when it holds none at all: an agent that
 * refuses every connection is better refused at start with the reason.
 */
export function capForOpenFiles(asked: number, limit: number | null, nativeIo: boolean): ConnectionCap {
  if (limit === null || limit === Infinity) return { maxConnections: asked, warning: null };
  const per = fdsPerConnection(nativeIo);
  const held = Math.floor((limit - RESERVED_FDS) / per);
  const needed = asked * per + RESERVED_FDS;
  const how = `raise the agent's open-file limit to at least ${needed} (the container runtime's LimitNOFILE, or ulimit -n) or lower --max-connections`;
  if (held < 1) throw new Error(`the open-file limit is ${limit}, which holds no proxied connection (${RESERVED_FDS} fds are kept for the agent, up to ${per} go to each connection); ${how}`);
  if (held >= asked) return { maxConnections: asked, warning: null };
  return {
    maxConnections: held,
    warning: `the open-file limit ${limit} holds ${held} proxied connections (up to ${per} fds each, ${RESERVED_FDS} kept for the agent), fewer than --max-connections ${asked}: capping at ${held}, so connections past it are refused and counted rather than reset for want of fds; ${how}`,
  };
}
