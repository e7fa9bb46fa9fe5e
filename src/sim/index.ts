// Public surface of the simulated node (tests and the demo import from here).
export { createNode, type AddPodOptions, type SimNode, type SimPod } from './node.ts';
export { cleanupLeftovers } from './leftovers.ts';
export { findCgroup2Mount, cgroupOfPid } from './cgroup2.ts';
export type { CgroupDriver, QosClass } from './layout.ts';
export type { ExecOptions, ExecResult } from './run.ts';
export { TOOLS_PATH } from './tools-path.ts';
