// Runs in the node's network namespace and serves listening sockets the parent opened in the
// machine's namespace (passed over IPC), connecting each accepted connection to a port on
// the node namespace's loopback: `kubectl port-forward` for the simulated node, so
// `mesh-agent status` and friends work from any terminal with their default addresses.
import * as net from 'node:net';

process.on('message', (msg: { target?: number }, server?: net.Server) => {
  if (!server || typeof msg?.target !== 'number') return;
  const target = msg.target;
  server.on('connection', (client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: target });
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  process.send?.({ forwarding: target });
});
// Lives as long as the demo: the IPC channel closing means the parent is gone.
process.on('disconnect', () => process.exit(0));
