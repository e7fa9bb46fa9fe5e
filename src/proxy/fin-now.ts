/**
 * Sends a socket's FIN at once, with the last bytes. Node's end() reaches shutdown(2) only
 * after libuv polls the socket writable on a later loop turn; under load that is after the
 * rest of the batch, and an HTTP/1 client that asked for `Connection: close` closes first on
 * reading the response. The side that closes first keeps the TIME_WAIT: it would land in
 * the meshed client's pod (thousands of ports a second), where direct it stays with the
 * server. Even a shutdown right after the write races the client's close (measured: about
 * a third lost); corked, the last bytes and the FIN leave as one segment, as from nginx.
 */
import type * as net from 'node:net';
import type { ForwarderSocket } from './forwarder-socket.ts';
import { loadAddon } from '../datapath/addon.ts';
import { socketFd } from './kernel-splice.ts';

interface FinOps {
  shutdownWrite(fd: number): number;
  setCork(fd: number, on: boolean): number;
}

let ops: FinOps | null | undefined;

function native(): FinOps | null {
  if (ops === undefined) {
    try {
      const a = loadAddon();
      ops = typeof a.shutdownWrite === 'function' && typeof a.setCork === 'function' ? a : null;
    } catch {
      ops = null; // no addon (a proxy run without the datapath): end() alone, as before
    }
  }
  return ops;
}

/**
 * Runs `write` (the last bytes the socket will send) corked, then shuts the write side, so
 * data and FIN leave together. Only when Node holds nothing unsent: a byte still queued in
 * Node would come after the FIN. Returns whether the FIN went; if not, the socket is as
 * before and the caller's end() sends it. Either way the caller still calls end(), whose own
 * shutdown then finds the FIN sent and does nothing.
 */
export function writeWithFin(sock: ForwarderSocket, write: () => void): boolean {
  const sent = corkedFin(sock, write);
  if (sent) finCounts.withLastBytes++;
  else finCounts.late++;
  return sent;
}

/**
 * Process-wide: replies whose FIN left with their last bytes, and those whose FIN was left to
 * end() (Node still held unsent bytes, or no addon), where a closing client may close first.
 */
export const finCounts = { withLastBytes: 0, late: 0 };

function corkedFin(sock: ForwarderSocket, write: () => void): boolean {
  // A socket driven from C++ (native-socket.ts) corks and shuts its own fd.
  if (sock.writeWithFin !== undefined) return sock.writeWithFin(write);
  const fd = sock.destroyed || sock.writableLength !== 0 ? null : socketFd(sock as net.Socket);
  const n = fd === null ? null : native();
  if (n === null || n.setCork(fd!, true) !== 0) {
    write();
    return false;
  }
  write();
  if (sock.writableLength === 0 && !sock.destroyed && n.shutdownWrite(fd!) === 0) return true;
  if (!sock.destroyed) n.setCork(fd!, false); // flush what the cork holds; end() follows later
  return false;
}

/** The FIN now, when nothing is left to write with it (a reply Node has fully handed over). */
export function finNow(sock: ForwarderSocket): boolean {
  return corkedFin(sock, () => {});
}
