// Public surface of the simulated node and cluster (tests, the demo and the bench import from here).
export { createNode, type AddPodOptions, type SimNode, type SimPod } from './node.ts';
export { cleanupLeftovers } from './leftovers.ts';
export { findCgroup2Mount, cgroupOfPid } from './cgroup2.ts';
export type { CgroupDriver, QosClass } from './layout.ts';
export type { ContainerPort } from './pod-object.ts';
export type { ExecOptions, ExecResult } from './run.ts';
export { SERVICE_TOOLS_PATH, TOOLS_PATH } from './tools-path.ts';
export { SimApiServer, type ApiServerOptions, type ChangeEvent, type EventType, type ListOptions, type LoggedRequest } from './apiserver.ts';
export { ApiError, apiVersionOf, type KubeObject, type ObjectMeta, type ResourceType } from './api-resources.ts';
export { createCluster, API_SERVER_PORT, type ClusterOptions, type ClusterPodOptions, type SimCluster, type SimClusterNode, type SimService } from './cluster.ts';
export type { ServiceOptions, ServicePort } from './cluster-objects.ts';
