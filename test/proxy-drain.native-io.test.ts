// test/proxy-drain.test.ts again with the HTTP/1 forwarder's sockets driven from C++ (--native-io).
import test from 'ava';
import { withNativeIo } from './helpers/native-io.ts';

await withNativeIo(test, () => import('./proxy-drain.test.ts'));
