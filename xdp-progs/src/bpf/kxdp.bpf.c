// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kxdp's XDP steering program.
 *
 * On every interface kxdp manages, it sends to the AF_XDP socket of the receiving queue only
 * what belongs to the dataplane, and passes everything else to the kernel:
 *   - pod and host interfaces: everything (those veths exist for the dataplane);
 *   - the uplink: VXLAN to this node from a known node, traffic to a service frontend, and
 *     replies to masqueraded flows (to a node address, in the masquerade port range, ICMP
 *     errors quoting such a flow included).
 * VXLAN to this node from an address that is no known node is dropped here and counted: the
 * underlay is closed, and the node's kernel, which has no socket on the port, would answer it
 * with port unreachable. What is the dataplane's but finds no socket on its queue (no agent
 * runs: it is being replaced, or restarting) is dropped and counted, so the node's kernel never
 * answers for a flow it does not know (no RST, no ICMP): the flow resumes when the next agent's
 * sockets are in place. The rest of the uplink's traffic passes as ever, so the node stays
 * reachable. Maps are filled from the snapshot by the Rust side.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "kxdp.h"

/* ICMP's header, declared here: <linux/icmp.h> pulls in libc's socket headers. */
struct icmp_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 sequence;
};

#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_ECHO 8
#define ICMP_TIME_EXCEEDED 11


struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, KXDP_MAX_IFACES * KXDP_MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32); /* ifindex */
	__type(value, struct kxdp_iface);
} ifaces SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kxdp_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32); /* network order */
	__type(value, __u8);
} node_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32); /* network order */
	__type(value, __u8);
} vxlan_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, struct kxdp_frontend);
	__type(value, __u8);
} frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KXDP_STAT_COUNT);
	__type(key, __u32); /* an enum kxdp_xdp_stat */
	__type(value, __u64);
} stats SEC(".maps");

/* A subprogram rather than inlined: its prototype puts enum kxdp_xdp_stat in the object's BTF,
 * where the Rust side's tests read it (the kernel refuses an enum-typed array key). */
static __noinline void count(enum kxdp_xdp_stat stat)
{
	__u32 key = stat;
	__u64 *c = bpf_map_lookup_elem(&stats, &key);

	if (c)
		*c += 1;
}

static __always_inline int in_masq_range(const struct kxdp_config *cfg, __u16 port)
{
	return port >= cfg->masq_port_min && port <= cfg->masq_port_max;
}

/* A masqueraded flow's quoted packet inside an ICMP error to this node: ours if its source port
 * (or echo identifier) is one we hand out. */
static __always_inline int quotes_masq_flow(const struct kxdp_config *cfg, void *inner, void *end)
{
	struct iphdr *iph = inner;

	if ((void *)(iph + 1) > end || iph->ihl != 5)
		return 0;
	if (iph->protocol == IPPROTO_TCP || iph->protocol == IPPROTO_UDP) {
		__be16 *sport = (void *)(iph + 1);

		if ((void *)(sport + 1) > end)
			return 0;
		return in_masq_range(cfg, bpf_ntohs(*sport));
	}
	if (iph->protocol == IPPROTO_ICMP) {
		struct icmp_hdr *icmp = (void *)(iph + 1);

		if ((void *)(icmp + 1) > end || icmp->type != ICMP_ECHO)
			return 0;
		return in_masq_range(cfg, bpf_ntohs(icmp->id));
	}
	return 0;
}

static __always_inline __u32 classify_uplink(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	__u32 zero = 0;
	struct kxdp_config *cfg = bpf_map_lookup_elem(&config, &zero);
	__u32 daddr;
	__u16 dport = 0;

	if (!cfg)
		return KXDP_STAT_PASS_NOT_OURS;
	if ((void *)(iph + 1) > end)
		return KXDP_STAT_PASS_MALFORMED;
	if (iph->version != 4 || iph->ihl != 5)
		return KXDP_STAT_PASS_MALFORMED;
	if (iph->frag_off & bpf_htons(0x3fff))
		return KXDP_STAT_PASS_MALFORMED;
	daddr = iph->daddr;

	if (iph->protocol == IPPROTO_TCP || iph->protocol == IPPROTO_UDP) {
		/* Source and destination ports lead both headers. */
		__be16 *ports = (void *)(iph + 1);
		struct kxdp_frontend fe = {};

		if ((void *)(ports + 2) > end)
			return KXDP_STAT_PASS_MALFORMED;
		dport = bpf_ntohs(ports[1]);
		if (iph->protocol == IPPROTO_UDP && dport == cfg->vxlan_port &&
		    bpf_map_lookup_elem(&node_ips, &daddr)) {
			__u32 saddr = iph->saddr;

			return bpf_map_lookup_elem(&vxlan_peers, &saddr) ? KXDP_STAT_XSK_VXLAN
									  : KXDP_STAT_DROP_UNKNOWN_PEER;
		}
		fe.addr = daddr;
		fe.port = dport;
		fe.proto = iph->protocol;
		if (bpf_map_lookup_elem(&frontends, &fe))
			return KXDP_STAT_XSK_SERVICE;
		if (in_masq_range(cfg, dport) && bpf_map_lookup_elem(&node_ips, &daddr))
			return KXDP_STAT_XSK_MASQ_REPLY;
		return KXDP_STAT_PASS_NOT_OURS;
	}
	if (iph->protocol == IPPROTO_ICMP) {
		struct icmp_hdr *icmp = (void *)(iph + 1);

		if ((void *)(icmp + 1) > end)
			return KXDP_STAT_PASS_MALFORMED;
		if (!bpf_map_lookup_elem(&node_ips, &daddr))
			return KXDP_STAT_PASS_NOT_OURS;
		if (icmp->type == ICMP_ECHOREPLY && in_masq_range(cfg, bpf_ntohs(icmp->id)))
			return KXDP_STAT_XSK_MASQ_REPLY;
		if ((icmp->type == ICMP_DEST_UNREACH || icmp->type == ICMP_TIME_EXCEEDED) &&
		    quotes_masq_flow(cfg, icmp + 1, end))
			return KXDP_STAT_XSK_MASQ_REPLY;
	}
	return KXDP_STAT_PASS_NOT_OURS;
}

SEC("xdp.frags")
int kxdp_steer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	__u32 ifindex = ctx->ingress_ifindex;
	struct kxdp_iface *iface = bpf_map_lookup_elem(&ifaces, &ifindex);
	__u32 stat, slot;

	if (!iface || iface->role == KXDP_IF_UNMANAGED) {
		stat = KXDP_STAT_PASS_UNMANAGED;
	} else if (iface->role == KXDP_IF_POD || iface->role == KXDP_IF_HOST) {
		stat = KXDP_STAT_XSK_POD;
	} else if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP)) {
		stat = KXDP_STAT_PASS_NOT_IPV4;
	} else {
		stat = classify_uplink(data, end);
	}
	count(stat);
	if (stat == KXDP_STAT_DROP_UNKNOWN_PEER)
		return XDP_DROP;
	if (stat > KXDP_STAT_XSK_MASQ_REPLY)
		return XDP_PASS;
	/* Ours: to this interface's socket for this queue, dropped if there is none. */
	if (!iface) /* not reached: unmanaged passed above; the verifier wants it said */
		return XDP_PASS;
	/* A queue past the interface's slots would land in the next interface's. */
	slot = iface->xsk_base + ctx->rx_queue_index;
	if (ctx->rx_queue_index >= KXDP_MAX_QUEUES || !bpf_map_lookup_elem(&xsks, &slot)) {
		count(KXDP_STAT_NO_SOCKET);
		return XDP_DROP;
	}
	return bpf_redirect_map(&xsks, slot, XDP_DROP);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
