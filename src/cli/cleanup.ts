// `mesh-agent cleanup`: removes what the agent's inbound capture leaves in the node's network
// namespace (docs/policy.md): the nftables table `ip mesh-agent`, its policy rule and route. An
// agent leaves them on purpose while a pod fails closed (its connections are refused until an
// agent is back); after uninstalling the mesh this opens those pods again. Run it on the node
// (or in a pod with hostNetwork and CAP_NET_ADMIN) once no agent runs there.
import type { Command } from 'commander';
import { captureInKernel, captureListenerInUse, removeCapture } from '../datapath/inbound-capture.ts';

export function registerCleanup(program: Command) {
  program
    .command('cleanup')
    .description('remove the inbound capture the agent left in this node\'s network namespace (after uninstall, while pods failed closed)')
    .option('--force', 'remove it even while an agent listens for the captured connections')
    .action(async (o: { force?: boolean }) => {
      // A running agent's capture is what keeps fail-closed pods closed to unmeshed clients, and
      // the agent puts it back only when a pod or policy changes: refuse, as the doc says to run
      // this once no agent runs.
      const listener = o.force ? null : await captureListenerInUse();
      if (listener) throw new Error(`cleanup: an agent is running on this node (its inbound listener ${listener} takes the captured connections); removing the capture now would open pods that fail closed to any client. Stop or uninstall the agent first, or pass --force`);
      const removed = await removeCapture();
      const left = await captureInKernel();
      if (left.table || left.rule || left.route) throw new Error(`cleanup: still in the kernel: ${JSON.stringify(left)}; run as root in the node's network namespace`);
      process.stdout.write(removed.length ? `removed: ${removed.join(', ')}\n` : 'nothing to remove: no inbound capture in this network namespace\n');
    });
}
