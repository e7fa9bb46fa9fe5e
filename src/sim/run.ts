// Running processes: collect a child's output, and start commands inside a cgroup and a
// network namespace. Every command is an argv array; nothing is ever parsed by a shell.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  timeoutMs?: number;
  input?: string;
}

export const NETNS_DIR = '/var/run/netns';

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

/** Waits for a child to exit and collects its output; on timeout it is SIGKILLed and code is null. */
export function collect(child: ChildProcess, opts: ExecOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          stderr += `\n[killed after ${opts.timeoutMs} ms]`;
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : undefined;
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    if (child.stdin) {
      child.stdin.on('error', () => {}); // a child that exits without reading must not crash us
      child.stdin.end(opts.input ?? '');
    }
  });
}

export async function execFile(cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
  return collect(spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] }), opts);
}

// The child first moves itself ($$ is the shell's pid, kept by exec) into the cgroup, so
// everything it becomes or forks is accounted there from the first instruction; then it
// enters the netns with nsenter, which (unlike `ip netns exec`) leaves /sys alone, so the
// cgroup2 mount and bpffs stay visible. Arguments arrive as positional parameters.
const JOIN_AND_ENTER = 'echo $$ > "$1" || exit 125; n=$2; shift 2; exec nsenter "--net=$n" -- "$@"';

/** Spawns cmd in cgroup dir `cgroup` and network namespace `netns`. */
export function spawnIn(cgroup: string, netns: string, cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  return spawn('/bin/sh', ['-c', JOIN_AND_ENTER, 'mesh-sim-enter', `${cgroup}/cgroup.procs`, netnsPath(netns), cmd, ...args], opts);
}
