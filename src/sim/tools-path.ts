import { fileURLToPath } from 'node:url';

/** Absolute path of the in-pod test tools; run as: pod.spawn(process.execPath, [TOOLS_PATH, 'tcp-echo', ...]). */
export const TOOLS_PATH = fileURLToPath(new URL('./tools.ts', import.meta.url));

/** Absolute path of the Service test processes (backend, load): pod.spawn(process.execPath, [SERVICE_TOOLS_PATH, 'backend', ...]). */
export const SERVICE_TOOLS_PATH = fileURLToPath(new URL('./service-tools.ts', import.meta.url));
