/**
 * Kernel splice (`mesh-agent run --kernel-splice`, opt-in): once a tunnel is opaque, its two
 * proxy sockets go into a BPF sockhash whose sk_skb verdict sends what each one receives
 * straight to the other's egress (native/bpf/mesh.bpf.c, docs/proxy.md). The agent then only
 * watches the sockets for EOF and errors.
 *
 * This module holds the kernel interface the tunnel needs and the few Node internals it
 * touches (`socket._handle`): stopping libuv's reads without closing the stream, and the fd.
 */
import type * as net from 'node:net';

/** The addon's splice methods (src/datapath/datapath.ts implements them). */
export interface KernelSplicer {
  /** Puts the pair in the sockhash; returns their cookies (the handles for the calls below). */
  splice(fdA: number, fdB: number): [bigint, bigint];
  /** Forgets the pair; a closed socket has already left the sockhash by itself. */
  unsplice(a: bigint, b: bigint): void;
  /** Bytes the socket received that the kernel redirected to its peer (null: unknown cookie). */
  splicedBytes(cookie: bigint): { bytes: number; drops: number } | null;
  /** Bytes handed to the socket's TCP send path so far (acked + queued); -1 when unreadable. */
  sentBytes(fd: number): number;
}

interface StreamHandle {
  fd?: number;
  reading?: boolean;
  readStop?: () => number;
  readStart?: () => number;
}

function handleOf(sock: net.Socket): StreamHandle | null {
  return ((sock as unknown as { _handle?: StreamHandle | null })._handle) ?? null;
}

/** The socket's file descriptor, or null (no handle, or not a real TCP socket). */
export function socketFd(sock: net.Socket): number | null {
  const fd = handleOf(sock)?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : null;
}

/**
 * Stops libuv reading the socket now, synchronously: pause() alone keeps reading into the
 * stream buffer up to its high-water mark. `reading` stays true so that Readable's _read
 * (from read() or resume()) does not start it again until resumeReading().
 */
export function stopReading(sock: net.Socket): boolean {
  const h = handleOf(sock);
  if (!h || typeof h.readStop !== 'function') return false;
  h.readStop();
  h.reading = true;
  return true;
}

/** Undoes stopReading: libuv reads again (as net.Socket's own tryReadStart does), and the stream flows. */
export function resumeReading(sock: net.Socket): void {
  const h = handleOf(sock);
  if (h && !sock.destroyed && typeof h.readStart === 'function') {
    h.reading = true;
    const err = h.readStart();
    if (err < 0) sock.destroy(new Error(`resuming reads failed (${err})`));
  }
  sock.resume();
}

/** Whether Node already holds the stream's EOF (read from the kernel, maybe not yet emitted). */
export function sawEof(sock: net.Socket): boolean {
  return sock.readableEnded || ((sock as unknown as { _readableState?: { ended?: boolean } })._readableState?.ended ?? false);
}
