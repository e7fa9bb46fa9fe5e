// Run by test/sim.test.ts: creates a node with a pod and long-running processes, reports
// what it made, then waits to be killed; with argument "exit" it exits at once instead,
// without destroying the node (the exit handler must).
import { createNode } from './index.ts';

const node = await createNode({ driver: 'cgroupfs' });
const pod = await node.addPod({ name: 'orphan', qos: 'BestEffort' });
const inPod = pod.spawn('sleep', ['600'], { stdio: 'ignore' });
const inNode = node.spawnInNode('sleep', ['600'], { stdio: 'ignore' });
await new Promise((r) => setTimeout(r, 100)); // let both join their cgroups
process.stdout.write(
  JSON.stringify({
    id: node.id,
    netns: [node.nodeNs, pod.netns],
    cgroups: [node.cgroupRoot, node.nodeCgroup],
    pids: [inPod.pid, inNode.pid],
  }) + '\n',
);
if (process.argv[2] === 'exit') process.exit(0);
setInterval(() => {}, 1 << 30);
