// Public surface of the simulated node and cluster (tests, the demo and the bench import from here).
export { createNode, type AddPodOptions, type SimNode, type SimPod } from './node.ts';
export { cleanupLeftovers } from './leftovers.ts';
export { findCgroup2Mount, cgroupOfPid } from './cgroup2.ts';
export type { CgroupDriver, QosClass } from './layout.ts';
export type { ExecOptions, ExecResult } from './run.ts';
export { SimApiServer, type ApiServerOptions, type ChangeEvent, type EventType, type ListOptions, type LoggedRequest } from './apiserver.ts';
export { ApiError, apiVersionOf, type KubeObject, type ObjectMeta, type ResourceType } from './api-resources.ts';
export { TOOLS_PATH } from './tools-path.ts';
