// A test's own temporary directory: owner-named (src/sim/layout.ts), so a SIGKILLed test
// worker's is swept by the next cleanupLeftovers(), and removed at the test's end otherwise.
import * as fs from 'node:fs';
import { ownedTempPrefix } from '../../src/sim/layout.ts';

export function testTempDir(t: { teardown(f: () => void): void }): string {
  const dir = fs.mkdtempSync(ownedTempPrefix('test'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
