// The chained CNI plugin's process: reads the runtime's invocation, asks the node's agent, prints
// the result or the error (src/cni/spec.ts has the protocol, decide.ts the decision); when the agent
// does not answer, reads its pod from the API server (pod-read.ts). It loads nothing else of the
// agent but its rule for a pod's annotations, and that only then: the runtime starts it for every
// pod sandbox.
import type * as http from 'node:http';
import { nodeHttp } from '../util/builtins.ts';
import { CNI_ERRORS, CniError, parseInvocation, PLUGIN_TYPE, renderAddResult, renderError, renderVersion, requestVersion, resultIps, type Invocation } from './spec.ts';
import { ADMIT_PATH, MAX_MESSAGE_BYTES, MessageReader, parseAdmitAnswer, RELEASE_PATH, type AdmitRequest } from './protocol.ts';
import { decideAdd, needsPodRead, type AgentOutcome, type PodRead } from './decide.ts';
import { readPod } from './pod-read.ts';
import { readState } from './state.ts';

/** DEL tells the agent best effort, never waiting long: the runtime's teardown must not hang on us. */
const DEL_TIMEOUT_MS = 2_000;

export interface PluginRun {
  stdout: string;
  /** A line for the runtime's log (stderr). */
  log: string;
  exitCode: number;
}

function post(socketPath: string, path: string, body: unknown, timeoutMs: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = nodeHttp().request({ socketPath, path, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) }, signal: AbortSignal.timeout(timeoutMs) }, (res) => {
      const answer = new MessageReader();
      res.on('data', (d: Buffer) => {
        if (!answer.add(d)) res.destroy(new Error(`the agent's answer is over ${MAX_MESSAGE_BYTES} bytes`));
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: answer.text() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

async function askAgent(inv: Invocation, req: AdmitRequest): Promise<AgentOutcome> {
  const sock = inv.config.agentSocket;
  try {
    const res = await post(sock, ADMIT_PATH, req, inv.config.addTimeoutMs);
    return { kind: 'answer', answer: parseAdmitAnswer(res.body) };
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const what = err.name === 'TimeoutError' || err.name === 'AbortError' ? `no answer within ${inv.config.addTimeoutMs} ms` : err.code ?? err.message;
    return { kind: 'unreachable', error: `${sock}: ${what}` };
  }
}

/** One invocation, from its environment and stdin to what goes to stdout and the exit code. */
export async function runPlugin(env: Record<string, string | undefined>, stdin: string): Promise<PluginRun> {
  const command = env.CNI_COMMAND;
  // As libcni's skel: VERSION reads no configuration, so it answers a runtime of any version; only
  // the request's cniVersion, echoed when the plugin speaks it (the spec's VERSION result).
  if (command === 'VERSION') return { stdout: renderVersion(stdin), log: '', exitCode: 0 };
  // DEL, CHECK, GC and STATUS never fail for our sake, not even on input we cannot read: a failed
  // DEL leaks the sandbox and its address and is retried forever (libcni stops a chain's DEL at
  // the first plugin that fails, and ours, chained last, runs first: the network plugin would never
  // release the address); a failed CHECK makes the runtime restart a healthy pod, so an agent
  // restart would restart every pod of the node. The agent drops what it learnt at ADD on its
  // own when the pod goes.
  const neverFails = command === 'DEL' || command === 'CHECK' || command === 'GC' || command === 'STATUS';
  let inv: Invocation;
  try {
    inv = parseInvocation(env, stdin);
  } catch (e) {
    const err = e instanceof CniError ? e : new CniError(CNI_ERRORS.invalidConfig, (e as Error).message);
    if (neverFails) return { stdout: '', log: `${PLUGIN_TYPE}: ${command}: nothing done: ${err.message}`, exitCode: 0 };
    return { stdout: renderError(err, requestVersion(stdin)), log: err.message, exitCode: 1 };
  }
  const version = inv.config.cniVersion;
  if (inv.command !== 'ADD') {
    if (inv.command === 'DEL' && inv.pod) {
      await post(inv.config.agentSocket, RELEASE_PATH, { ...inv.pod, ips: [], containerId: inv.containerId }, DEL_TIMEOUT_MS).catch(() => {});
    }
    return { stdout: '', log: '', exitCode: 0 };
  }
  if (inv.config.prevResult === null) {
    const err = new CniError(CNI_ERRORS.invalidConfig, `${PLUGIN_TYPE} is a chained plugin and got no prevResult: list it after the network plugin in the plugins of the node's conflist (mesh-agent install does)`);
    return { stdout: renderError(err, version), log: err.message, exitCode: 1 };
  }
  // Not a Kubernetes pod (no K8S_POD_NAME): not ours to decide.
  if (!inv.pod) return { stdout: renderAddResult(inv.config), log: '', exitCode: 0 };
  const req: AdmitRequest = { ...inv.pod, ips: resultIps(inv.config.prevResult), containerId: inv.containerId };
  const outcome = await askAgent(inv, req);
  const state = outcome.kind === 'answer' && outcome.answer.result !== 'retry' ? { kind: 'missing' as const } : readState(inv.config.stateFile);
  // Only when the agent has not decided: its answer stays the fast path.
  const read: PodRead = needsPodRead(inv.pod, outcome, state) ? await readPod(inv.config.kubeconfig, inv.pod) : { kind: 'not-configured' };
  const decision = decideAdd(inv.pod, outcome, inv.config.stateFile, state, read);
  if (!decision.ok) return { stdout: renderError(decision.error, version), log: decision.error.message, exitCode: 1 };
  return { stdout: renderAddResult(inv.config), log: `mesh-agent-cni: pod ${inv.pod.namespace}/${inv.pod.name}: ${decision.why}`, exitCode: 0 };
}

async function readStdin(): Promise<string> {
  let text = '';
  process.stdin.setEncoding('utf8');
  for await (const chunk of process.stdin) text += chunk;
  return text;
}

export async function pluginMain(): Promise<void> {
  const run = await runPlugin(process.env, await readStdin());
  if (run.stdout) process.stdout.write(run.stdout + '\n');
  if (run.log) process.stderr.write(run.log + '\n');
  process.exitCode = run.exitCode;
}
