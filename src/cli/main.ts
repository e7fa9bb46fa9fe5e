// The `mesh-agent` command line. Exit codes: 0 ok, 1 error (message on stderr), 2 usage.
import { Command, CommanderError } from 'commander';
import { VERSION } from '../agent/agent.ts';
import { registerRun } from './run.ts';
import { registerDemo } from './demo.ts';
import { registerStatus } from './status.ts';
import { registerInject } from './inject.ts';
import { registerInstall } from './install.ts';
import { registerController } from './controller.ts';
import { registerStat } from './stat.ts';
import { registerTap } from './tap.ts';

export async function main(argv: string[]): Promise<void> {
  const program = new Command('mesh-agent')
    .description('sidecar-less service mesh data plane: eBPF connect() redirection to a per-node proxy')
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError();
  registerRun(program);
  registerDemo(program);
  registerStatus(program);
  registerInject(program);
  registerInstall(program);
  registerController(program);
  registerStat(program);
  registerTap(program);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 1 ? 2 : e.exitCode);
    process.stderr.write(`mesh-agent: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
