// tcpdump on a simulated cluster's fabric (the bridge every node's uplink joins): what crosses the
// network between nodes, to the byte. Started before the traffic, stopped after; the file stays
// for reading and is removed with the directory the test made. --immediate-mode: without it libpcap hands
// packets over a ring block at a time, and those still in the ring when tcpdump is stopped are lost;
// a 16 MiB buffer (-B) so that a burst is not dropped before tcpdump reads it.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFile } from '../../src/sim/run.ts';
import { netnsPath } from '../../src/sim/run.ts';

export interface Capture {
  file: string;
  /** What tcpdump said (its packet counts come at the end). */
  log(): string;
  /** Stops tcpdump (SIGINT, so it flushes) and returns the capture's bytes. */
  stop(): Promise<Buffer>;
  /** Packets matching a tcpdump filter in the stopped capture. */
  count(filter: string): Promise<number>;
}

export async function captureFabric(fabricNs: string, dir: string, name = 'fabric.pcap'): Promise<Capture> {
  const file = path.join(dir, name);
  const proc: ChildProcess = spawn('nsenter', [`--net=${netnsPath(fabricNs)}`, '--', 'tcpdump', '-i', 'any', '-s', '0', '-B', '16384', '--immediate-mode', '-U', '-n', '-w', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  await new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (/listening on/.test(err)) {
        proc.stderr!.off('data', onData);
        resolve();
      }
    };
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => reject(new Error(`tcpdump exited (${code}) before it listened: ${err}; install tcpdump (./dev setup does)`)));
  });
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return {
    file,
    log: () => err,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGINT');
      await exited;
      return fs.readFileSync(file);
    },
    async count(filter: string) {
      const r = await execFile('tcpdump', ['-r', file, '-n', filter], { timeoutMs: 30_000 });
      if (r.code !== 0) throw new Error(`tcpdump -r ${file} ${filter}: ${r.stderr}`);
      return r.stdout.split('\n').filter((l) => l.trim() !== '').length;
    },
  };
}
