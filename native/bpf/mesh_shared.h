/* Structs shared by the BPF programs (mesh.bpf.c) and the Node-API addon.
 * Fixed-width types only; addresses in network byte order, ports in host order. */
#ifndef MESH_SHARED_H
#define MESH_SHARED_H

#define MESH_MAX_PORT_RANGES 16
#define MESH_MAX_CGROUP_DEPTH 16

#define MESH_MAX_PODS 4096
#define MESH_MAX_SKIP_DSTS 16384
#define MESH_MAX_CONNS 262144
/* Established redirected connections the proxy has not taken yet: its accept queues' worth. */
#define MESH_MAX_PENDING 65536

/* Inclusive port ranges; n of them are valid. A bounded array keeps the verifier happy and
 * lets `3306,5000-5010,1-1024` stay one entry instead of exploding into per-port keys. */
struct mesh_port_ranges {
	__u16 lo[MESH_MAX_PORT_RANGES];
	__u16 hi[MESH_MAX_PORT_RANGES];
	__u32 n;
};

/* One meshed pod, keyed by its pod-level cgroup id. */
struct mesh_pod {
	__u32 ip; /* status.podIP, network order; informative */
	__u32 flags;
	struct mesh_port_ranges skip_out;
};

/* The single entry of the global config array. */
struct mesh_global {
	__u32 proxy_ip;   /* network order; 0 = not configured: every program passes */
	__u16 proxy_port; /* host order */
	__u16 _pad;
	struct mesh_port_ranges skip_out; /* skip-outbound ports for every pod */
};

/* The original destination of a redirected connection. */
struct mesh_orig {
	__u32 dst_ip;   /* network order */
	__u16 dst_port; /* host order */
	__u16 src_port; /* filled by sockops: the tuple key's port, so close can delete it */
	__u32 src_ip;   /* filled by sockops */
	__u32 flags;    /* MESH_ORIG_TAKEN, in mesh_orig_by_tuple only */
	__u64 pod_key;  /* the source pod's cgroup id */
};

/* A tuple record lives until both ends are done with it: the client may close (a write then
 * close, its FIN acked by the proxy's kernel) before the proxy accepts and looks it up. Which
 * came first is decided by who deletes its mesh_orig_pending entry (mesh.bpf.c). Written by the
 * proxy only after it won that, so a second lookup of the same connection is not taken for a
 * close: */
#define MESH_ORIG_TAKEN 1

/* What the proxy sees as the remote end of an accepted connection. */
struct mesh_tuple {
	__u32 ip;   /* network order */
	__u16 port; /* host order */
	__u16 _pad;
};

/* Kernel splice (--kernel-splice): one entry per spliced proxy socket, keyed by its socket
 * cookie. The sk_skb verdict redirects what the socket receives to the peer's egress and
 * counts it here, so telemetry can read the bytes the proxy no longer sees. */
#define MESH_MAX_SPLICED 65536
struct mesh_splice_link {
	__u64 peer;  /* the peer socket's cookie: its key in mesh_splice */
	__u64 bytes; /* bytes received and redirected to the peer */
	__u64 drops; /* skbs whose redirect failed (peer gone): dropped */
};

enum mesh_counter {
	MESH_C_REDIRECTED = 0,
	MESH_C_SKIPPED_PORT,     /* skip-outbound (pod or global) */
	MESH_C_SKIPPED_INBOUND,  /* destination pod's skip-inbound */
	MESH_C_UNMESHED,         /* TCP connect from a cgroup with no pod entry */
	MESH_C_PASSED_LOCAL,     /* loopback or the proxy itself */
	MESH_C_NOT_TCP,
	MESH_C_ESTABLISHED,      /* sockops copied a record to the tuple map */
	MESH_C_ESTABLISHED_MISS, /* sockops found no cookie record for an established socket */
	MESH_C_CLOSED,           /* records deleted at close */
	MESH_C_GETPEERNAME,      /* getpeername answers rewritten */
	MESH_C_MAP_FULL,         /* map update failed */
	MESH_C__COUNT
};

#endif
