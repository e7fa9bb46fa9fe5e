// The admin API's HTTP server (src/agent/admin-http.ts) with real clients over loopback:
// node:http with keep-alive, curl, and raw sockets for what clients rarely send.
import test from 'ava';
import * as http from 'node:http';
import * as net from 'node:net';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { AdminHttpServer } from '../src/agent/admin-http.ts';

async function server(t: { teardown: (f: () => Promise<void>) => void }) {
  const seen: string[] = [];
  const s = new AdminHttpServer(async (method, path) => {
    seen.push(`${method} ${path}`);
    if (path === '/boom') throw new Error('the handler failed');
    if (path === '/slow') await new Promise((r) => setTimeout(r, 50));
    return { status: path === '/missing' ? 404 : 200, headers: { 'content-type': 'text/plain' }, body: `you asked ${path}\n` };
  });
  await s.listen('127.0.0.1', 0);
  const port = (s as unknown as { server: net.Server }).server.address() as net.AddressInfo;
  t.teardown(() => s.close());
  return { port: port.port, seen };
}

/** Sends raw bytes and reads until the server closes (or 2 s pass). */
async function raw(port: number, bytes: string): Promise<{ text: string; closed: boolean }> {
  const c = net.connect(port, '127.0.0.1');
  c.write(bytes);
  let text = '';
  c.on('data', (d) => (text += d));
  const closed = await Promise.race([once(c, 'end').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 2000))]);
  c.destroy();
  return { text, closed };
}

test('GET and HEAD, several requests on one keep-alive connection, query strings ignored', async (t) => {
  const { port, seen } = await server(t);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const get = (path: string, method = 'GET') => new Promise<{ status: number; body: string; socket: net.Socket; headers: http.IncomingHttpHeaders }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, method, agent }, (res) => {
      const socket = res.socket;
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body, socket, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
  const a = await get('/status?x=1');
  t.like(a, { status: 200, body: 'you asked /status\n' });
  t.is(a.headers['content-length'], String(Buffer.byteLength('you asked /status\n')));
  const b = await get('/slow');
  t.is(b.socket, a.socket, 'the connection was kept');
  const h = await get('/metrics', 'HEAD');
  t.like(h, { status: 200, body: '' });
  t.is((await get('/missing')).status, 404);
  t.deepEqual(seen, ['GET /status', 'GET /slow', 'HEAD /metrics', 'GET /missing']);
  agent.destroy();
});

test('what the admin API refuses: other methods, bodies, broken or huge heads; a failing handler is a 500', async (t) => {
  const { port } = await server(t);
  const post = await raw(port, 'POST /status HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc');
  t.regex(post.text, /^HTTP\/1\.1 405 Method Not Allowed\r\nallow: GET, HEAD\r\n/);
  t.true(post.closed, 'closed: the body was not read');
  const del = await raw(port, 'DELETE /status HTTP/1.1\r\nhost: x\r\n\r\n');
  t.regex(del.text, /^HTTP\/1\.1 405 /);
  const bad = await raw(port, 'GET /sta tus HTTP/1.1\r\n\r\n');
  t.regex(bad.text, /^HTTP\/1\.1 400 Bad Request\r\n/);
  t.true(bad.closed);
  const huge = await raw(port, `GET / HTTP/1.1\r\nx: ${'a'.repeat(20_000)}\r\n\r\n`);
  t.regex(huge.text, /^HTTP\/1\.1 431 /);
  const boom = await raw(port, 'GET /boom HTTP/1.1\r\nconnection: close\r\n\r\n');
  t.regex(boom.text, /^HTTP\/1\.1 500 Internal Server Error\r\n[^]*the handler failed\n$/);
  t.true(boom.closed, 'Connection: close is honoured');
  const old = await raw(port, 'GET /live HTTP/1.0\r\n\r\n');
  t.true(old.closed, 'HTTP/1.0 without keep-alive is closed after the answer');
});

test('curl, as the tests and mesh-agent status use it', async (t) => {
  const { port } = await server(t);
  const { stdout } = await promisify(execFile)('curl', ['-sS', '-w', ' %{http_code}', `http://127.0.0.1:${port}/ready`]);
  t.is(stdout, 'you asked /ready\n 200');
});

test('pipelined requests are answered in order: sent together, or the next one while an answer is pending', async (t) => {
  const { port, seen } = await server(t);
  const together = await raw(port, 'GET /a HTTP/1.1\r\nhost: x\r\n\r\nHEAD /b HTTP/1.1\r\nhost: x\r\n\r\nGET /c HTTP/1.1\r\nconnection: close\r\n\r\n');
  t.true(together.closed, 'closed after the last, which asked for it');
  t.deepEqual(together.text.match(/^HTTP\/1\.1 \d+/gm), ['HTTP/1.1 200', 'HTTP/1.1 200', 'HTTP/1.1 200'], together.text);
  t.regex(together.text, /you asked \/a\n[^]*you asked \/c\n$/);
  // The second request arrives while the first's (slow) answer is being made.
  const c = net.connect(port, '127.0.0.1');
  let text = '';
  c.on('data', (d) => (text += d));
  c.write('GET /slow HTTP/1.1\r\nhost: x\r\n\r\n');
  await new Promise<void>((r) => setImmediate(r));
  c.write('GET /after HTTP/1.1\r\nconnection: close\r\n\r\n');
  const closed = await Promise.race([once(c, 'end').then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
  c.destroy();
  t.true(closed, `the second request was answered: ${JSON.stringify(text)}`);
  t.regex(text, /you asked \/slow\n[^]*you asked \/after\n$/);
  t.deepEqual(seen, ['GET /a', 'HEAD /b', 'GET /c', 'GET /slow', 'GET /after']);
});
