// Real client bytes: a real client connects to a local recorder that keeps what arrives
// until the client falls quiet (it is then waiting for the server: its first flight is complete).
import * as net from 'node:net';
import * as tls from 'node:tls';

export async function captureFirstFlight(startClient: (port: number) => { destroy(): void }): Promise<Uint8Array> {
  let client: { destroy(): void } | undefined;
  const server = net.createServer();
  try {
    const captured = new Promise<Uint8Array>((resolve, reject) => {
      server.on('connection', (sock) => {
        const chunks: Buffer[] = [];
        let quiet: NodeJS.Timeout | undefined;
        sock.on('error', () => {});
        sock.on('data', (c) => {
          chunks.push(c);
          clearTimeout(quiet);
          quiet = setTimeout(() => {
            sock.destroy();
            resolve(new Uint8Array(Buffer.concat(chunks)));
          }, 150);
        });
      });
      setTimeout(() => reject(new Error('client sent nothing within 10 s')), 10_000).unref();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    client = startClient((server.address() as net.AddressInfo).port);
    return await captured;
  } finally {
    client?.destroy();
    server.close();
  }
}

export function clientHello(options: Omit<tls.ConnectionOptions, 'host' | 'port'>): Promise<Uint8Array> {
  return captureFirstFlight((port) => {
    const socket = tls.connect({ host: '127.0.0.1', port, ...options });
    socket.on('error', () => {}); // the recorder hangs up mid-handshake
    return socket;
  });
}

