// Clients that write and close at once, for the datapath's write-then-close tests: run in a pod
// with python3 while the proxy is stopped (SIGSTOP), so none is accepted before it has closed.
import type { ChildProcess } from 'node:child_process';

/**
 * Python that opens n connections to ip:port, sends `message-i` on each, then its FIN, and closes
 * each once the FIN is acknowledged (FIN_WAIT2): the kernel then finishes the socket at once
 * (TIME_WAIT), as for any client that closes right after writing.
 */
export function fireAndForget(ip: string, port: number, n: number): string[] {
  return ['-c', `
import socket, struct, time
socks = []
for i in range(${n}):
    s = socket.create_connection(('${ip}', ${port}), timeout=10)
    s.sendall(b'message-%d' % i)
    s.shutdown(socket.SHUT_WR)
    socks.append(s)
deadline = time.monotonic() + 10
for s in socks:
    while struct.unpack('B', s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1))[0] != 5 and time.monotonic() < deadline:
        time.sleep(0.001)
    s.close()`];
}

/** The messages fireAndForget(…, n) sends, sorted as the tests compare them. */
export const fireAndForgetMessages = (n: number): string[] => Array.from({ length: n }, (_, i) => `message-${i}`).sort();

/**
 * Runs fireAndForget(ip, port, n) in `pod` while `proxy` is stopped: a busy proxy, to the last,
 * accepts nothing until every client has closed. The proxy runs again whatever the clients did.
 */
export function fireAndForgetWhileStopped<R>(pod: { exec(cmd: string, args: string[], o: { timeoutMs: number }): Promise<R> }, proxy: ChildProcess, ip: string, port: number, n: number): Promise<R> {
  proxy.kill('SIGSTOP');
  return pod.exec('python3', fireAndForget(ip, port, n), { timeoutMs: 20_000 }).finally(() => proxy.kill('SIGCONT'));
}
