/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Types shared by the XDP steering program and kxdp's Rust side (xdp-progs/src/lib.rs).
 * Every struct here is mirrored there with #[repr(C)], and a test compares the two through
 * the object's BTF: change both, or the test fails.
 */
#ifndef KXDP_H
#define KXDP_H

#include <linux/types.h>

/* What an interface is to the dataplane (tables::InterfaceRole). */
enum kxdp_if_role {
	KXDP_IF_UNMANAGED = 0,
	KXDP_IF_UPLINK = 1,
	KXDP_IF_POD = 2,
	KXDP_IF_HOST = 3,
};

/*
 * Each managed interface owns KXDP_MAX_QUEUES consecutive XSKMAP slots from its xsk_base, one
 * per receive queue; the map holds KXDP_MAX_IFACES interfaces at once. The Rust side's
 * runtime::MAX_QUEUES and runtime::MAX_INTERFACES are the same numbers (checked, each and
 * through the object's map, by a test).
 */
#define KXDP_MAX_QUEUES 64
#define KXDP_MAX_IFACES 256

/* Per interface, keyed by ifindex. Its sockets sit at xsks[xsk_base + rx queue], so several
 * interfaces share one XSKMAP. */
struct kxdp_iface {
	enum kxdp_if_role role; /* 4 bytes: the Rust side mirrors it as u32 */
	__u32 xsk_base;
};

/* The one entry of the config array. Ports in host byte order. */
struct kxdp_config {
	__u16 vxlan_port;
	__u16 masq_port_min;
	__u16 masq_port_max;
	__u16 pad;
};

/* A service frontend: address (network order), port (host order), IP protocol. */
struct kxdp_frontend {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

/*
 * Why the program decided what it did; one per-CPU counter each. The Rust side lists the same
 * names in the same order (XdpDecision, each enumerator KXDP_STAT_ and its name in capitals),
 * checked by a test against this enum in the BTF.
 */
enum kxdp_xdp_stat {
	KXDP_STAT_XSK_POD = 0,     /* from a pod or the host interface: all of it is ours */
	KXDP_STAT_XSK_VXLAN,       /* VXLAN to this node from a known node */
	KXDP_STAT_XSK_SERVICE,     /* to a service frontend (VIP, LB/external IP, NodePort) */
	KXDP_STAT_XSK_MASQ_REPLY,  /* to this node in the masquerade port range */
	KXDP_STAT_NO_SOCKET,       /* ours, but no AF_XDP socket on this queue: passed */
	KXDP_STAT_PASS_UNMANAGED,  /* interface kxdp does not manage */
	KXDP_STAT_PASS_NOT_IPV4,
	KXDP_STAT_PASS_MALFORMED,  /* truncated, IP options or fragment: the kernel decides */
	KXDP_STAT_DROP_UNKNOWN_PEER, /* VXLAN to this node from an address that is no known node */
	KXDP_STAT_PASS_NOT_OURS,
	KXDP_STAT_COUNT,
};

#endif
