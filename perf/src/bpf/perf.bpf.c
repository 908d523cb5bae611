// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Programs of kxdp's performance harness (perf/), kept apart from the steering program.
 *
 * kxdp_gen: a traffic generator for BPF_PROG_RUN in live-frames mode
 * (BPF_F_TEST_XDP_LIVE_FRAMES). The kernel runs it on a template frame as often as asked; it
 * spreads the frames over gen_cfg.flows UDP source ports (10000 and up; the template's UDP
 * checksum must be zero) and returns XDP_TX, which live mode turns into a transmit on the
 * interface given as the run's ingress: on a veth, straight into its peer's XDP.
 *
 * kxdp_sink: counts the frames and bytes an interface receives, then drops them, so a
 * measurement counts what arrived without paying for the kernel's stack.
 *
 * kxdp_redirect: sends every frame out of redirect_cfg's interface unchanged (the XDP
 * redirect ceiling of a path).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct gen_cfg {
	__u32 flows; /* distinct source ports, at least 1 */
	__u32 seq;   /* frames generated so far (one generator thread) */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen_cfg);
} gen_cfg SEC(".maps");

/* Key 0: frames, key 1: bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} sink_stats SEC(".maps");

SEC("xdp")
int kxdp_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	struct udphdr *udp = (void *)(iph + 1);
	__u32 zero = 0;
	struct gen_cfg *cfg = bpf_map_lookup_elem(&gen_cfg, &zero);
	__u32 seq;

	if (!cfg || (void *)(udp + 1) > end)
		return XDP_ABORTED;
	seq = cfg->seq++;
	if (cfg->flows > 1)
		udp->source = bpf_htons(10000 + seq % cfg->flows);
	return XDP_TX;
}

SEC("xdp")
int kxdp_sink(struct xdp_md *ctx)
{
	__u32 key = 0;
	__u64 *c = bpf_map_lookup_elem(&sink_stats, &key);

	if (c)
		*c += 1;
	key = 1;
	c = bpf_map_lookup_elem(&sink_stats, &key);
	if (c)
		*c += ctx->data_end - ctx->data;
	return XDP_DROP;
}

/* Key 0: the interface kxdp_redirect sends to. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} redirect_cfg SEC(".maps");

SEC("xdp")
int kxdp_redirect(struct xdp_md *ctx)
{
	__u32 zero = 0;
	__u32 *ifindex = bpf_map_lookup_elem(&redirect_cfg, &zero);

	if (!ifindex || !*ifindex)
		return XDP_ABORTED;
	return bpf_redirect(*ifindex, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
