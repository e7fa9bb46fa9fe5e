// The few bytes of HTTP/1.1 the admin API needs (GET and HEAD, keep-alive and pipelining, no request bodies;
// other methods get 405),
// over node:net with the proxy's own head parser. node:http would cost the agent ~4 MB of RSS
// for a server that answers a probe and a scrape now and then (docs/benchmarks.md, "Memory as
// installed").
import * as net from 'node:net';
import { HEAD_NEED_MORE, HEAD_TOO_LARGE, HeadReader, parseRequestHead } from '../proxy/http1/parse-head.ts';

export interface AdminResponse {
  status: number;
  headers?: Record<string, string>;
  body?: string;
}

export type AdminHandler = (method: string, path: string) => AdminResponse | Promise<AdminResponse>;

const REASONS: Record<number, string> = { 200: 'OK', 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed', 413: 'Content Too Large', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error', 503: 'Service Unavailable' };
const MAX_HEAD = 16 * 1024;
/** A connection that sends nothing (no head, or no next request) for this long is closed. */
const IDLE_MS = 30_000;

export class AdminHttpServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly handler: AdminHandler;

  constructor(handler: AdminHandler) {
    this.handler = handler;
    this.server = net.createServer((s) => this.serve(s));
  }

  private serve(s: net.Socket): void {
    this.sockets.add(s);
    s.on('close', () => this.sockets.delete(s));
    s.on('error', () => {});
    s.setTimeout(IDLE_MS, () => s.destroy());
    const reader = new HeadReader(MAX_HEAD, true);
    const onData = (chunk: Buffer) => {
      const end = reader.push(chunk);
      if (end === HEAD_NEED_MORE) return;
      // One request at a time: a pipelined next one waits in the socket (flowing without a
      // 'data' listener, its bytes were lost and the client waited for the idle timeout).
      s.off('data', onData);
      s.pause();
      if (end === HEAD_TOO_LARGE) return this.reply(s, 'GET', { status: 431, body: 'request head too large\n' }, true, null);
      const buf = reader.buffer;
      let head;
      try {
        head = parseRequestHead(buf, reader.start, end);
      } catch (e) {
        return this.reply(s, 'GET', { status: 400, body: `bad request: ${(e as Error).message}\n` }, true, null);
      }
      // Nothing here takes a body: one would have to be read past before the next request.
      if (head.contentLength > 0 || head.hasTransferEncoding) {
        return this.reply(s, head.method, { status: head.method === 'GET' || head.method === 'HEAD' ? 400 : 405, headers: { allow: 'GET, HEAD' }, body: 'the admin API takes no request body\n' }, true, null);
      }
      const keep = head.versionMinor === 1 ? !head.connClose : head.connKeepAlive;
      // Bytes past the head are the next pipelined request (RFC 9112 9.3.2): read after this answer.
      const rest = buf.subarray(end);
      const next = () => {
        reader.reset();
        s.on('data', onData);
        s.resume();
        if (rest.length > 0) onData(rest);
      };
      if (head.method !== 'GET' && head.method !== 'HEAD') {
        return this.reply(s, head.method, { status: 405, headers: { allow: 'GET, HEAD' } }, !keep, next);
      }
      const path = head.target.split('?')[0]!;
      let r: AdminResponse | Promise<AdminResponse>;
      try {
        r = this.handler(head.method, path);
      } catch (e) {
        r = { status: 500, body: `${(e as Error).message}\n` };
      }
      Promise.resolve(r).then(
        (res) => this.reply(s, head.method, res, !keep, next),
        (e) => this.reply(s, head.method, { status: 500, body: `${(e as Error).message}\n` }, !keep, next),
      );
    };
    s.on('data', onData);
  }

  private reply(s: net.Socket, method: string, r: AdminResponse, close: boolean, next: (() => void) | null): void {
    if (s.destroyed) return;
    const body = Buffer.from(r.body ?? '', 'utf8');
    let head = `HTTP/1.1 ${r.status} ${REASONS[r.status] ?? 'Status'}\r\n`;
    for (const [k, v] of Object.entries(r.headers ?? {})) head += `${k}: ${v}\r\n`;
    head += `content-length: ${body.length}\r\n${close || next === null ? 'connection: close\r\n' : ''}\r\n`;
    s.write(head);
    if (method !== 'HEAD' && body.length > 0) s.write(body);
    if (close || next === null) {
      s.end();
      s.resume(); // what follows is discarded, the client's FIN read: the socket closes now, not at the idle timeout
    } else next();
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => this.server.close(() => r()));
  }
}
