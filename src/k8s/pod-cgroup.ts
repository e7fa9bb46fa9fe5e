// Finds a pod's cgroup by its UID, as kubelet lays it out under either cgroup driver and
// every QoS class. Path logic is pure; the lookup touches the filesystem.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Directory names kubelet gives a pod's cgroup (cgroupfs: pod<uid>; systemd: *-pod<uid_>.slice). */
export function podCgroupNames(uid: string): string[] {
  const u = uid.replace(/-/g, '_');
  return [
    `pod${uid}`,
    `kubepods-pod${u}.slice`,
    `kubepods-burstable-pod${u}.slice`,
    `kubepods-besteffort-pod${u}.slice`,
  ];
}

/** Relative paths where kubelet puts a pod's cgroup, most likely first. */
export function candidatePaths(uid: string): string[] {
  const u = uid.replace(/-/g, '_');
  return [
    `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${u}.slice`,
    `kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${u}.slice`,
    `kubepods.slice/kubepods-pod${u}.slice`,
    `kubepods/burstable/pod${uid}`,
    `kubepods/besteffort/pod${uid}`,
    `kubepods/pod${uid}`,
  ];
}

/**
 * Looks for the pod's cgroup under root: the known layouts first (also when root is itself
 * kubepods or a QoS cgroup), then a bounded search for a directory with the pod's name, which
 * covers nested runtimes (kind, k3s) that add a prefix.
 */
export function findPodCgroup(root: string, uid: string, maxDepth = 5): string | null {
  for (const rel of candidatePaths(uid)) {
    const parts = rel.split('/');
    // Try the full path and its suffixes, so root may be any ancestor of the pod cgroup.
    for (let i = 0; i < parts.length; i++) {
      const p = path.join(root, ...parts.slice(i));
      if (isDir(p)) return p;
    }
  }
  const names = new Set(podCgroupNames(uid));
  const queue: Array<[string, number]> = [[root, 0]];
  while (queue.length) {
    const [dir, depth] = queue.shift()!;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      continue;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (names.has(e.name)) return p;
      if (depth + 1 < maxDepth) queue.push([p, depth + 1]);
    }
  }
  return null;
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
