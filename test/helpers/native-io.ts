// The HTTP/1 forwarder's test files run a second time with its sockets driven from C++
// (--native-io): each *.native-io.test.ts sets MESH_TEST_NATIVE_IO and imports the file it
// repeats; the harnesses ask nativeIo(). afterNativeIo() fails the run when no socket was adopted,
// so a harness that stopped adopting cannot pass as native.
import type { ExecutionContext } from 'ava';
import type { ConnContext } from '../../src/proxy/context.ts';
import { NativeSocket, nativeIoCounts, nativeIoOps } from '../../src/proxy/native-socket.ts';

/** Read at each call: the variant file sets it after its own imports. */
export function nativeIo(): boolean {
  return process.env.MESH_TEST_NATIVE_IO === '1';
}

/** What the dispatcher does after detecting HTTP/1 with --native-io, for harnesses that stand in for it. */
export function adoptForTest(ctx: ConnContext, head: Buffer): Buffer {
  if (!nativeIo()) return head;
  const a = NativeSocket.adoptClient(ctx.client, head);
  if (a === null) throw new Error('the client socket was not adopted');
  ctx.io = { client: a.socket, upstream: NativeSocket.wrap };
  return a.head;
}

/** Loads a test file with native IO on, and checks it was used. */
export async function withNativeIo(test: { after: (title: string, fn: (t: ExecutionContext) => void) => void }, load: () => Promise<unknown>): Promise<void> {
  if (nativeIoOps() === null) throw new Error('the datapath addon has no native socket calls; rebuild it (./dev setup)');
  process.env.MESH_TEST_NATIVE_IO = '1';
  await load();
  test.after('native IO carried the connections', (t) => {
    t.true(nativeIoCounts.clients > 0, `clients adopted: ${nativeIoCounts.clients}`);
    t.true(nativeIoCounts.upstreams > 0, `upstreams adopted: ${nativeIoCounts.upstreams}`);
  });
}
