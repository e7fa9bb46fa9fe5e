// The kube-proxy stand-in: in every node namespace, keeps the `ip kube-proxy` nftables table in
// step with the Services and EndpointSlices of the stand-in API server. The rules are
// renderRuleset() (pure); each change is applied whole and atomically with `nft -f` in the
// node's namespace, and only where a node's ruleset changed.
import type { SimApiServer } from './apiserver.ts';
import { nftBinary } from '../datapath/nft.ts';
import { Coalescer } from '../util/coalesce.ts';
import { renderRuleset, serviceTargets, TABLE } from './kube-proxy-rules.ts';
import { execFile, netnsPath } from './run.ts';

export interface ProxiedNode {
  name: string;
  nodeNs: string;
}

/** Runs nft in a node namespace; throws with nft's own message. */
export async function nft(nodeNs: string, args: string[], input?: string): Promise<string> {
  const r = await execFile('nsenter', [`--net=${netnsPath(nodeNs)}`, '--', nftBinary(), ...args], { timeoutMs: 10_000, input });
  if (r.code !== 0) throw new Error(`nft ${args.join(' ')} in ${nodeNs} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

export class KubeProxy {
  readonly #api: SimApiServer;
  readonly #nodes: ProxiedNode[];
  readonly #serviceCidr: string;
  readonly #applied = new Map<string, string>(); // nodeNs -> ruleset text in the kernel
  readonly #queue: Coalescer;
  readonly #unsubscribe: (() => void)[];

  constructor(api: SimApiServer, nodes: ProxiedNode[], serviceCidr: string, onError: (e: Error) => void) {
    this.#api = api;
    this.#nodes = nodes;
    this.#serviceCidr = serviceCidr;
    this.#queue = new Coalescer(() => this.#sync(), onError);
    const poke = () => this.#queue.poke();
    this.#unsubscribe = [api.subscribe('Service', poke), api.subscribe('EndpointSlice', poke)];
    poke();
  }

  async #sync(): Promise<void> {
    const services = this.#api.list('Service');
    const slices = this.#api.list('EndpointSlice');
    await Promise.all(
      this.#nodes.map(async (n) => {
        const text = renderRuleset(serviceTargets(services, slices, n.name), this.#serviceCidr);
        if (this.#applied.get(n.nodeNs) === text) return;
        await nft(n.nodeNs, ['-f', '-'], text);
        this.#applied.set(n.nodeNs, text);
      }),
    );
  }

  /** The table as the kernel holds it in this node's namespace (`nft list table ip kube-proxy`). */
  listRules(nodeNs: string): Promise<string> {
    return nft(nodeNs, ['list', 'table', 'ip', TABLE]);
  }

  idle(): Promise<void> {
    return this.#queue.idle();
  }

  /** The node's kernel lost its rules (a reboot): kube-proxy starts again and writes them whole. */
  async resync(nodeNs: string): Promise<void> {
    this.#applied.delete(nodeNs);
    this.#queue.poke();
    await this.#queue.idle();
  }

  async stop(): Promise<void> {
    for (const u of this.#unsubscribe) u();
    await this.#queue.stop();
  }
}
