// `mesh-agent controller`: the service agents report to and `stat` and `tap` ask.
import type { Command } from 'commander';
import { jsonLogger } from '../agent/log.ts';
import { ControllerServer } from '../controller/server.ts';
import { parseWindow } from '../controller/stat.ts';
import { parseHostPort } from './addr.ts';

export function registerController(program: Command) {
  program
    .command('controller')
    .description('run the controller: receive the agents\' reports, serve stat and relay tap')
    .option('--listen <ip:port>', 'address for agents and the CLI (HTTP/2 cleartext)', '0.0.0.0:8086')
    .option('--retention <window>', 'how long reports are kept: the longest stat window', '1h')
    .option('-q, --quiet', 'log warnings and errors only')
    .action(async function (this: Command, o) {
      let listen: { host: string; port: number };
      let retentionMs: number;
      try {
        listen = parseHostPort(o.listen, '--listen', '0.0.0.0', 8086);
        retentionMs = parseWindow(o.retention, 7 * 24 * 3_600_000);
      } catch (e) {
        this.error(`error: ${(e as Error).message}`);
      }
      const log = jsonLogger({ quiet: o.quiet });
      const server = new ControllerServer({ retentionMs, log: (level, msg, fields) => log[level](msg, fields) });
      const addr = await server.listen(listen.host, listen.port);
      log.info('controller listening', { listen: `${addr.host}:${addr.port}`, retention: o.retention });
      const stop = (sig: string) => {
        log.info(`${sig}: stopping`);
        void server.close().then(() => process.exit(0));
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
}
