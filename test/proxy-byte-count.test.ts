// countBytes (src/proxy/byte-count.ts): a Duplex that is not a socket counts what it reads and
// writes as net.Socket does, for an in-process pair's end and a tunnel's stream alike.
import test from 'ava';
import { Duplex } from 'node:stream';
import { countBytes } from '../src/proxy/byte-count.ts';

test('reads pushed and writes handed down are counted, strings by their encoded length, _writev batches too', async (t) => {
  const written: Buffer[] = [];
  const d = countBytes(new Duplex({
    read() {},
    write(chunk, _e, cb) {
      written.push(chunk);
      cb();
    },
    writev(chunks, cb) {
      for (const c of chunks) written.push(c.chunk);
      cb();
    },
  }));
  t.is(d.bytesRead, 0);
  t.is(d.bytesWritten, 0);
  d.push(Buffer.from('abc'));
  d.push('é', 'utf8');
  t.is(d.bytesRead, 5, '3 bytes, then 2 for é');
  d.cork();
  d.write(Buffer.from('12'));
  d.write(Buffer.from('345'));
  process.nextTick(() => d.uncork()); // both in one _writev
  await new Promise<void>((r) => d.write(Buffer.from('6789'), () => r()));
  t.is(Buffer.concat(written).toString(), '123456789');
  t.is(d.bytesWritten, 9);
  d.push(null);
  t.is(d.bytesRead, 5, 'the end is no byte');
});
