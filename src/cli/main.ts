// The `mesh-agent` command line. Exit codes: 0 ok, 1 error (message on stderr), 2 usage, 141 stdout closed by its reader.
import { Command, CommanderError } from 'commander';
import { VERSION } from '../version.ts';

type Register = (program: Command) => void;

// Loaded on demand: the agent (`run`) is a long-lived process on every node, and the other
// commands' modules (the demo's application, YAML, the controller) would stay in its memory.
const COMMANDS: Array<[string, () => Promise<Register>]> = [
  ['run', async () => (await import('./run.ts')).registerRun],
  ['demo', async () => (await import('./demo.ts')).registerDemo],
  ['status', async () => (await import('./status.ts')).registerStatus],
  ['inject', async () => (await import('./inject.ts')).registerInject],
  ['install', async () => (await import('./install.ts')).registerInstall],
  ['controller', async () => (await import('./controller.ts')).registerController],
  ['stat', async () => (await import('./stat.ts')).registerStat],
  ['tap', async () => (await import('./tap.ts')).registerTap],
  ['diagnostics', async () => (await import('./diagnostics.ts')).registerDiagnostics],
  ['dashboard', async () => (await import('./dashboard.ts')).registerDashboard],
  ['identity', async () => (await import('./identity.ts')).registerIdentity],
  ['cleanup', async () => (await import('./cleanup.ts')).registerCleanup],
  ['cni-install', async () => (await import('./cni-install.ts')).registerCniInstall],
];

/** The commands to load: only the one named (the demo runs them all), else all for help and errors. */
export function commandsFor(argv: string[]): string[] {
  const named = argv[2];
  const all = COMMANDS.map(([n]) => n);
  return named && named !== 'demo' && all.includes(named) ? [named] : all;
}

/** How a shell reports a process killed by SIGPIPE (128 + 13), as kubectl's and linkerd's are. */
export const EXIT_PIPE_CLOSED = 141;

export async function main(argv: string[]): Promise<void> {
  // `mesh-agent inject big.yaml | head`, `tap ... | grep -m1`: the reader went away. Node ignores
  // SIGPIPE, so the write fails with EPIPE, an unhandled 'error' event and a stack trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(EXIT_PIPE_CLOSED);
    throw e;
  });
  const program = new Command('mesh-agent')
    .description('sidecar-less service mesh data plane: eBPF connect() redirection to a per-node proxy')
    .version(VERSION)
    .exitOverride()
    .showHelpAfterError();
  const wanted = new Set(commandsFor(argv));
  for (const [name, load] of COMMANDS) if (wanted.has(name)) (await load())(program);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) process.exit(e.exitCode === 1 ? 2 : e.exitCode);
    process.stderr.write(`mesh-agent: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
