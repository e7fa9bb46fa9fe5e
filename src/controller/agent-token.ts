// The agent's side of --agent-auth token (agent-auth.ts): the bearer its controller links send,
// read from the projected token file at each request and reconnect, since kubelet rewrites it in
// place before it expires. No file (an agent run by hand, a controller without auth): no bearer.
import * as fs from 'node:fs';

/** Where install mounts it (src/k8s/manifests.ts): beside the identity token, its own audience. */
export const CONTROLLER_TOKEN_FILE = '/var/run/secrets/tokens/mesh-agent-controller';

/** `authorization` headers for the controller, or none; says once per cause why there are none. */
export function controllerBearer(file: string | undefined, log: (level: 'info' | 'warn', msg: string) => void): () => Record<string, string> {
  let said = '';
  const once = (level: 'info' | 'warn', why: string) => {
    if (said !== why) log(level, why);
    said = why;
  };
  return (): Record<string, string> => {
    if (file === undefined) return {};
    let token: string;
    try {
      token = fs.readFileSync(file, 'utf8').trim();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      once(code === 'ENOENT' ? 'info' : 'warn', `no controller token at ${file} (${code ?? (e as Error).message}): the controller links go without one, which a controller with --agent-auth token refuses; mesh-agent install mounts it, or pass --controller-token-file`);
      return {};
    }
    if (token === '') {
      once('warn', `the controller token file ${file} is empty: the controller links go without a token`);
      return {};
    }
    said = '';
    return { authorization: `Bearer ${token}` };
  };
}
