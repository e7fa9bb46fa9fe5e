// A client that asked for `Connection: close` and closes as soon as it has the response (as
// wrk does) must not be left holding the TIME_WAIT: the proxy's FIN leaves with the
// response's last bytes (src/proxy/fin-now.ts), so the proxy closes first, as nginx does.
// Real wrk against the proxy on loopback; TIME_WAITs counted with ss by the proxy's port.
import test from 'ava';
import { execFile, execFileSync } from 'node:child_process';
import * as net from 'node:net';
import { once } from 'node:events';
import { Proxy, PortSet } from '../src/proxy/index.ts';
import { createHttp1Handler, UpstreamPool } from '../src/proxy/http1/index.ts';
import { until } from './helpers/until.ts';
import { finCounts } from '../src/proxy/fin-now.ts';
import { nativeIo } from './helpers/native-io.ts';

const HOST = '127.0.0.1';

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => execFile(cmd, args, { timeout: 20_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${cmd}: ${err.message}\n${stderr}`)) : resolve(stdout))));
}

/** Connections to or from the proxy's port still closing or open (TIME_WAIT excluded). */
function settling(port: number): number {
  const out = execFileSync('ss', ['-Htan', 'exclude', 'time-wait', 'exclude', 'listening', `( sport = :${port} or dport = :${port} )`], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

function timeWait(filter: string): number {
  const out = execFileSync('ss', ['-Htan', 'state', 'time-wait', filter], { encoding: 'utf8' });
  return out.split('\n').filter((l) => l.trim() !== '').length;
}

test('Connection: close: the proxy closes first, so the TIME_WAIT stays with it, not the client', async (t) => {
  const origin = net.createServer((s) => {
    s.on('error', () => {});
    let buf = '';
    s.on('data', (d) => {
      buf += d.toString('latin1');
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        s.write('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello'); // keep-alive: the pool reuses it
      }
    });
  });
  origin.listen(0, HOST);
  await once(origin, 'listening');
  const upPort = (origin.address() as net.AddressInfo).port;
  const pool = new UpstreamPool();
  const proxy = new Proxy({
    listen: { host: HOST, port: 0 },
    lookup: (ip) => ({ ip, port: upPort, podKey: 1n }),
    opaquePorts: PortSet.empty(),
    handlers: { http1: createHttp1Handler({ pool }) },
    log: () => {},
    nativeIo: nativeIo(),
  });
  const { port } = await proxy.listen();
  t.teardown(async () => {
    pool.close();
    await proxy.close(200);
    origin.close();
  });

  // A loaded agent: each loop turn also runs 1 ms of other work, as under traffic. Node's own
  // end() sends the FIN only on a later turn, by when wrk has read the response and closed.
  let busy = true;
  const spin = (): void => {
    const until = performance.now() + 1;
    while (performance.now() < until);
    if (busy) setImmediate(spin);
  };
  setImmediate(spin);
  const fins = { ...finCounts };
  // Another test's connections to an earlier listener on the same port number may still be in
  // TIME_WAIT (60 s): only this run's are counted.
  const clientBefore = timeWait(`dport = :${port}`);
  // wrk runs of a second until 20 requests are made: a starved machine (load 20 on 2 cores)
  // has given a whole second to none.
  let wrk = '';
  let requests = 0;
  let runs = 0;
  let timeouts = 0;
  while (requests < 20 && runs < 30) {
    const out = await run('wrk', ['-t1', '-c4', '-d1s', '-H', 'Connection: close', `http://${HOST}:${port}/`]);
    wrk += out;
    runs += 1;
    requests += Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
    // A request wrk gave up on (its 2 s timeout) is a connection it closed itself.
    timeouts += Number(/Socket errors:.*timeout (\d+)/.exec(out)?.[1] ?? 0);
  }
  busy = false;
  t.true(requests >= 20, `wrk made ${requests} requests in ${runs} runs:\n${wrk}`);
  t.false(/Non-2xx/.test(wrk), wrk);
  // Count once every connection of the run is closed or in TIME_WAIT: nothing left in
  // FIN-WAIT, CLOSE-WAIT or LAST-ACK on either side of the proxy's port.
  await until(() => settling(port), (n) => n === 0, 'the closes of the run to settle', { intervalMs: 50 });
  const clientSide = Math.max(0, timeWait(`dport = :${port}`) - clientBefore);
  const proxySide = timeWait(`sport = :${port}`);
  const withData = finCounts.withLastBytes - fins.withLastBytes;
  const late = finCounts.late - fins.late;
  t.log(`TIME_WAIT after ${requests} requests: client side ${clientSide}, proxy side ${proxySide}; FIN with the response ${withData}, left to end() ${late}`);
  // The FIN rides with the response unless Node still held bytes of it (a busy loop can leave
  // some queued): only those replies' clients may close first, besides the (up to 4 per
  // run) connections wrk closes itself when its second is up, and those it timed out.
  t.true(withData >= requests / 2, `the FIN left with the response for only ${withData} of ${requests} replies`);
  // And a few more: at load 20+ one reply in 32 was still seen closed first by wrk with no late
  // FIN and no timeout (a cause not found). 5% of the replies, where without the corked FIN wrk
  // closes first on nearly all of them (63 of 67).
  const slack = Math.ceil(requests / 20);
  t.true(clientSide <= 4 * runs + late + timeouts + slack, `wrk closed first on ${clientSide} connections, though the FIN left with all but ${late} responses and it timed out ${timeouts} (slack ${slack}):\n${wrk}`);
  // Not all of them: on loopback (net.ipv4.tcp_tw_reuse = 2) a new connect() may take over the
  // tuple of a TIME_WAIT over 1 s old, which then disappears; a suite run lost 39 of 680.
  t.true(proxySide >= requests / 2, `the proxy should hold the TIME_WAITs, holds ${proxySide}`);
});
