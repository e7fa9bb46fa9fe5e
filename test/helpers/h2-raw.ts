// HTTP/2 frames by hand, for what node:http2 would never send (or would send differently): a
// peer whose exact frames a test scripts, and reads back frame by frame. No HPACK decoder: header
// blocks are written with the static table and literals, and read back only as frames.
import * as net from 'node:net';
import { once } from 'node:events';

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
export const FRAME = { DATA: 0x0, HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PING: 0x6, GOAWAY: 0x7, WINDOW_UPDATE: 0x8 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId, 5);
  return Buffer.concat([h, payload]);
}

export const rstFrame = (id: number, code: number): Buffer => {
  const p = Buffer.alloc(4);
  p.writeUInt32BE(code);
  return frame(FRAME.RST_STREAM, 0, id, p);
};

/** A literal header field without indexing, with a new name (RFC 7541 6.2.2); short names and values only. */
function literal(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00, name.length]), Buffer.from(name), Buffer.from([value.length]), Buffer.from(value)]);
}

/** A request header block: :method (GET or POST), :scheme http, :path, :authority, then extra fields. */
export function requestBlock(method: 'GET' | 'POST', path: string, extra: Record<string, string> = {}): Buffer {
  const parts: Buffer[] = [Buffer.from([method === 'GET' ? 0x82 : 0x83, 0x86, 0x04, path.length]), Buffer.from(path), Buffer.from([0x01, 1]), Buffer.from('x')];
  for (const [n, v] of Object.entries(extra)) parts.push(literal(n, v));
  return Buffer.concat(parts);
}

/** A response header block: :status 200 (static table), then extra fields. */
export function responseBlock(extra: Record<string, string> = {}): Buffer {
  return Buffer.concat([Buffer.from([0x88]), ...Object.entries(extra).map(([n, v]) => literal(n, v))]);
}

/** Splits what a socket reads into frames (after `skip` bytes: a server skips the client's preface). */
export function readFrames(sock: net.Socket, onFrame: (f: Frame) => void, skip = 0): void {
  let buf = Buffer.alloc(0);
  sock.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    if (skip > 0) {
      if (buf.length < skip) return;
      buf = buf.subarray(skip);
      skip = 0;
    }
    while (buf.length >= 9) {
      const len = buf.readUIntBE(0, 3);
      if (buf.length < 9 + len) break;
      onFrame({ type: buf[3]!, flags: buf[4]!, streamId: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) });
      buf = buf.subarray(9 + len);
    }
  });
}

/** One side of a raw HTTP/2 connection: SETTINGS answered, every frame kept, waits for a frame by predicate. */
export class RawPeer {
  readonly frames: Frame[] = [];
  readonly sock: net.Socket;
  #waiters: { pred: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = [];
  closed: Promise<void>;

  constructor(sock: net.Socket, skip: number, onFrame?: (f: Frame, peer: RawPeer) => void) {
    this.sock = sock;
    sock.on('error', () => {});
    this.closed = new Promise((resolve) => sock.once('close', () => resolve()));
    readFrames(sock, (f) => {
      this.frames.push(f);
      if (f.type === FRAME.SETTINGS && (f.flags & FLAG.ACK) === 0) this.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
      if (f.type === FRAME.PING && (f.flags & FLAG.ACK) === 0) this.write(frame(FRAME.PING, FLAG.ACK, 0, f.payload));
      onFrame?.(f, this);
      this.#waiters = this.#waiters.filter((w) => {
        if (!w.pred(f)) return true;
        w.resolve(f);
        return false;
      });
    }, skip);
  }

  write(b: Buffer): void {
    if (!this.sock.destroyed) this.sock.write(b);
  }

  /** The first frame (seen already or to come) that matches. */
  next(pred: (f: Frame) => boolean): Promise<Frame> {
    const seen = this.frames.find(pred);
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve) => this.#waiters.push({ pred, resolve }));
  }
}

/** A raw h2c client: preface and empty SETTINGS sent. */
export async function rawClient(port: number): Promise<RawPeer> {
  const sock = net.connect(port, '127.0.0.1');
  const peer = new RawPeer(sock, 0);
  await once(sock, 'connect');
  peer.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0)]));
  return peer;
}

/** A raw h2c server: each connection's preface skipped, empty SETTINGS sent, its frames to `onFrame`. */
export async function startRawH2Server(onFrame: (f: Frame, peer: RawPeer) => void) {
  const peers = new Set<RawPeer>();
  const server = net.createServer((sock) => {
    const peer = new RawPeer(sock, PREFACE.length, onFrame);
    peers.add(peer);
    sock.on('close', () => peers.delete(peer));
    peer.write(frame(FRAME.SETTINGS, 0, 0));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    peers,
    close: async () => {
      for (const p of peers) p.sock.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
