//go:build ignore

/* nlb data plane: the per-packet decision of filter.Decide, in the kernel.
 * Every branch here has a twin in filter/decide.go; TestDatapathMatchesModel
 * runs both on the same frames and requires the same decision. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "nlb.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Two state slots: user space writes the inactive one, then flips
 * nlb_active, so a packet sees a whole old or a whole new state. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct nlb_state);
} nlb_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nlb_active SEC(".maps");

/* The agent's lease: CLOCK_MONOTONIC ns until which this host may take new
 * flows in its buckets. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} nlb_lease SEC(".maps");

/* Packets and bytes per (table, reason); row NLB_NO_TABLE for unfiltered
 * classes. One entry holds both: the byte count costs an add on the cache
 * line the packet count brought in. */
struct nlb_count {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, (NLB_TABLES + 1) * NLB_NUM_REASONS);
	__type(key, __u32);
	__type(value, struct nlb_count);
} nlb_counters SEC(".maps");

/* Per claimed host ID: the source that holds it and its budget. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NLB_MAX_HOST_ID + 1);
	__type(key, __u32);
	__type(value, struct nlb_hb_src);
} nlb_hb_sources SEC(".maps");

#define ETH_P_NLB_HB 0x886F
#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define PACKET_HOST 0
#define ICMP_ECHO_REQ 8

enum flow_class { C_STATELESS = 0, C_TCP_SYN = 1, C_TCP = 2 };

/* The flow hash (filter.HashWord): murmur3's 64-bit finaliser, keyed by
 * XOR with the two seed halves before each of two passes. See
 * docs/architecture.md, "Flow hash", for why not SipHash. */
static __always_inline __u64 fmix64(__u64 h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static __always_inline __u64 flow_hash(__u64 k0, __u64 k1, __u64 m)
{
	return fmix64(fmix64(m ^ k0) ^ k1);
}

/* filter.HashAddr6: an IPv6 client's address halves (host order) and
 * port, each behind a pass of the finaliser. */
static __always_inline __u64 flow_hash6(__u64 k0, __u64 k1, __u64 hi, __u64 lo, __u16 port)
{
	return fmix64(fmix64(fmix64(fmix64(hi ^ k0) ^ lo) ^ port) ^ k1);
}

/* A flow to a VIP: addresses in network order (IPv4 in word 0). */
struct flow {
	__u32 client[4];
	__u32 vip[4];
	__u16 cport, vport;
};

static __always_inline int finish(struct __sk_buff *skb, __u32 table, __u32 reason, __u32 bucket)
{
	__u32 key = table * NLB_NUM_REASONS + reason;
	struct nlb_count *cnt = bpf_map_lookup_elem(&nlb_counters, &key);
	if (cnt) {
		cnt->packets += 1;
		cnt->bytes += skb->len;
	}
	/* The decision, for tests and debugging; cb is scratch space here. */
	skb->cb[0] = reason;
	skb->cb[1] = table;
	skb->cb[2] = bucket;
	if (reason == R_ACCEPT_OWNER || reason == R_ACCEPT_HELD || reason == R_PASS_REMOTE) {
		/* Frames to the cluster's multicast MAC must look addressed to
		 * this host, or TCP discards them. */
		if (skb->pkt_type != PACKET_HOST)
			bpf_skb_change_type(skb, PACKET_HOST);
		return TC_ACT_OK;
	}
	if (reason >= R_PASS_NOT_IP && reason <= R_PASS_REMOTE)
		return TC_ACT_OK;
	return TC_ACT_SHOT;
}

#define NO_BUCKET 0xffffffff

/* Does this host hold the TCP flow client -> vip? Asks the socket table:
 * an established, closing, time-wait or request socket holds it; a listener
 * holds it only if the ACK carries a valid SYN cookie (l3 and th: the
 * packet's IP and TCP headers, or 0 when it has none to check). */
static __always_inline int holds_flow(struct __sk_buff *skb, struct flow *f, int is6,
				      void *l3, struct tcphdr *th)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	if (is6) {
		__builtin_memcpy(t.ipv6.saddr, f->client, 16);
		__builtin_memcpy(t.ipv6.daddr, f->vip, 16);
		t.ipv6.sport = bpf_htons(f->cport);
		t.ipv6.dport = bpf_htons(f->vport);
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	} else {
		t.ipv4.saddr = f->client[0];
		t.ipv4.daddr = f->vip[0];
		t.ipv4.sport = bpf_htons(f->cport);
		t.ipv4.dport = bpf_htons(f->vport);
		sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	int held = sk->state != BPF_TCP_LISTEN;
	if (!held && l3 && th)
		held = bpf_tcp_check_syncookie(sk, l3, is6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr),
					       th, sizeof(*th)) == 0;
	bpf_sk_release(sk);
	return held;
}

static __always_inline int decide_flow(struct __sk_buff *skb, struct nlb_state *st, __u32 ti,
				       struct flow *f, int is6, int class, void *l3, struct tcphdr *th)
{
	__u8 aff = 1; /* none */
	if (ti < NLB_MAX_RULES) {
		struct nlb_rule *r = &st->rules[ti];
		if (r->mode == 3)
			return finish(skb, ti, R_DROP_RULE_DISABLED, NO_BUCKET);
		aff = r->affinity;
	}
	__u16 port = f->cport;
	if (aff != 1)
		port = 0;
	__u64 h;
	if (is6) {
		__u64 hi = ((__u64)bpf_ntohl(f->client[0]) << 32) | bpf_ntohl(f->client[1]);
		__u64 lo = ((__u64)bpf_ntohl(f->client[2]) << 32) | bpf_ntohl(f->client[3]);
		if (aff == 3) {
			hi &= st->net6_mask_hi;
			lo &= st->net6_mask_lo;
		}
		h = flow_hash6(st->seed0, st->seed1, hi, lo, port);
	} else {
		__u32 ip = bpf_ntohl(f->client[0]);
		if (aff == 3)
			ip &= 0xffffff00;
		h = flow_hash(st->seed0, st->seed1, ((__u64)ip << 32) | port);
	}
	__u32 b = h & (NLB_BUCKETS - 1);
	if (ti > NLB_DEFAULT_RULE)
		return finish(skb, NLB_NO_TABLE, R_INVALID, NO_BUCKET);
	__u8 mark = st->marks[ti][b];
	if (mark == M_NONE)
		return finish(skb, ti, R_DROP_NOT_OWNER, b); /* cheap path: no lookup */

	__u32 zero = 0;
	__u64 *lease = bpf_map_lookup_elem(&nlb_lease, &zero);
	int lease_ok = lease && bpf_ktime_get_ns() < *lease;

	if (class == C_STATELESS) {
		if (mark == M_RETAINED)
			return finish(skb, ti, R_DROP_NOT_OWNER, b);
		if (!lease_ok)
			return finish(skb, ti, R_DROP_LEASE_EXPIRED, b);
		return finish(skb, ti, R_ACCEPT_OWNER, b);
	}
	if (lease_ok) {
		if (mark == M_OWNED)
			return finish(skb, ti, R_ACCEPT_OWNER, b);
		if (mark == M_DIRTY && class == C_TCP_SYN)
			return finish(skb, ti, R_ACCEPT_OWNER, b);
	}
	if (class != C_TCP_SYN && holds_flow(skb, f, is6, l3, th))
		return finish(skb, ti, R_ACCEPT_HELD, b);
	if (mark == M_RETAINED)
		return finish(skb, ti, R_DROP_NOT_OWNER, b);
	if (!lease_ok)
		return finish(skb, ti, R_DROP_LEASE_EXPIRED, b);
	return finish(skb, ti, R_DROP_DIRTY_NON_SYN, b);
}

static __always_inline int decide4(struct __sk_buff *skb, struct nlb_state *st, __u32 ti,
				   __u32 client, __u16 cport, __u32 vip, __u16 vport, int class,
				   struct iphdr *iph, struct tcphdr *th)
{
	struct flow f = {.client = {client}, .vip = {vip}, .cport = cport, .vport = vport};
	return decide_flow(skb, st, ti, &f, 0, class, iph, th);
}

/* First rule for (vip, port, proto); any_port matches VIP and protocol
 * only, skipping disabled rules (the fragment rule). Rules are
 * VIP-specific first, then all-VIP. */
static __always_inline __u32 match_rule(struct nlb_state *st, __u32 vip, __u8 vip6, __u16 port, __u8 proto, int any_port)
{
	__u8 bit = proto == IPPROTO_TCP ? 1 : proto == IPPROTO_UDP ? 2 : 0;
	if (!bit)
		return NLB_DEFAULT_RULE;
	for (__u32 i = 0; i < NLB_MAX_RULES; i++) {
		if (i >= st->n_rules)
			break;
		struct nlb_rule *r = &st->rules[i];
		if (r->vip && (r->vip != vip || r->vip6 != vip6))
			continue;
		if (!(r->proto & bit))
			continue;
		if (any_port && r->mode == 3)
			continue;
		if (any_port || (port >= r->port_lo && port <= r->port_hi))
			return i;
	}
	return NLB_DEFAULT_RULE;
}

static __always_inline struct nlb_state *active_state(void)
{
	__u32 zero = 0;
	__u32 *slot = bpf_map_lookup_elem(&nlb_active, &zero);
	if (!slot)
		return 0;
	__u32 s = *slot & 1;
	return bpf_map_lookup_elem(&nlb_states, &s);
}


/* pull makes the frame's first want bytes (or all of a shorter frame)
 * linear, so that the headers the decision reads are in reach, and
 * returns the packet's bounds. */
static __always_inline void pull(struct __sk_buff *skb, __u32 want, void **data, void **end)
{
	*data = (void *)(long)skb->data;
	*end = (void *)(long)skb->data_end;
	if (*end - *data < want && skb->len > *end - *data) {
		bpf_skb_pull_data(skb, skb->len < want ? skb->len : want);
		*data = (void *)(long)skb->data;
		*end = (void *)(long)skb->data_end;
	}
}

/* IPv6 (filter/decide6.go). */
#define ETH_P_IPV6_ 0x86DD
#define IPPROTO_ICMPV6_ 58
#define HDR_WINDOW6 (14 + 512) /* filter.HeaderWindow6 */
#define MAX_EXT6 8             /* filter.MaxExtHeaders6 */

struct chain6 {
	__u32 off; /* transport header, from the IPv6 header */
	__u8 proto;
	__u8 frag;
	__u16 frag_off;
};

/* filter.walk6: the header chain of the IPv6 packet at data + base, which
 * is iplen bytes long. 0 when malformed. */
static __always_inline int walk6(void *data, void *end, __u32 base, __u32 iplen, struct chain6 *c)
{
	if (base > HDR_WINDOW6)
		return 0;
	struct ipv6hdr *ip6 = data + base;
	if ((void *)(ip6 + 1) > end)
		return 0;
	__u8 nh = ip6->nexthdr;
	__u32 off = sizeof(*ip6);
#pragma unroll
	for (int i = 0; i <= MAX_EXT6; i++) {
		if (nh != 0 && nh != 43 && nh != 60 && nh != 44) {
			c->proto = nh;
			c->off = off;
			return 1;
		}
		if (i == MAX_EXT6)
			return 0;
		__u32 need = nh == 44 ? 8 : 2;
		if (off > HDR_WINDOW6 || off + need > iplen || base + off + need > HDR_WINDOW6)
			return 0;
		__u8 *h = data + base + off;
		if ((void *)(h + 2) > end)
			return 0;
		if (nh == 44) {
			if ((void *)(h + 8) > end)
				return 0;
			__u16 f = bpf_ntohs(*(__u16 *)(h + 2));
			nh = h[0];
			off += 8;
			if ((f >> 3) != 0 || (f & 1)) {
				c->proto = nh;
				c->off = off;
				c->frag = 1;
				c->frag_off = f >> 3;
				return 1;
			}
			continue; /* an atomic fragment: a whole packet */
		}
		nh = h[0];
		off += ((__u32)h[1] + 1) * 8;
	}
	return 0;
}

static __always_inline int decide6_flow(struct __sk_buff *skb, struct nlb_state *st, __u32 ti,
					struct flow *f, int class, void *l3, struct tcphdr *th)
{
	return decide_flow(skb, st, ti, f, 1, class, l3, th);
}

/* in6: are n bytes at offset off of the IPv6 packet (iplen long, at frame
 * offset base) inside it and inside the window? */
#define IN6(base, off, n, iplen) ((off) <= HDR_WINDOW6 && (off) + (n) <= (iplen) && (base) + (off) + (n) <= HDR_WINDOW6)

static __always_inline int decide6(struct __sk_buff *skb)
{
	void *data, *end;
	pull(skb, HDR_WINDOW6, &data, &end);
	struct ipv6hdr *ip6 = data + 14;
	if ((void *)(ip6 + 1) > end)
		return finish(skb, NLB_NO_TABLE, R_PASS_SHORT, NO_BUCKET);
	struct nlb_state *st = active_state();
	if (!st)
		return finish(skb, NLB_NO_TABLE, R_PASS_NOT_VIP, NO_BUCKET);
	struct flow f = {};
	__builtin_memcpy(f.vip, &ip6->daddr, 16);
	__u8 vip6 = 0;
	for (__u32 i = 0; i < NLB_MAX_VIPS; i++) {
		if (i >= st->n_vips6)
			break;
		__u32 *v = (__u32 *)st->vips6[i];
		if (v[0] == f.vip[0] && v[1] == f.vip[1] && v[2] == f.vip[2] && v[3] == f.vip[3]) {
			vip6 = i + 1;
			break;
		}
	}
	if (!vip6)
		return finish(skb, NLB_NO_TABLE, R_PASS_NOT_VIP, NO_BUCKET);

	/* From here on the frame is for a VIP: broken headers are dropped. */
	if (ip6->version != 6)
		return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
	__u32 iplen = skb->len - 14;
	__u32 plen = bpf_ntohs(ip6->payload_len);
	if (plen != 0 && sizeof(*ip6) + plen < iplen)
		iplen = sizeof(*ip6) + plen;
	__builtin_memcpy(f.client, &ip6->saddr, 16);
	struct chain6 c = {};
	if (!walk6(data, end, 14, iplen, &c))
		return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
	__u32 off = c.off;
	__u8 *l4;
	if (c.frag) {
		if (c.frag_off == 0 && (c.proto == IPPROTO_TCP || c.proto == IPPROTO_UDP) && IN6(14, off, 4, iplen)) {
			l4 = (void *)ip6 + off;
			if ((void *)(l4 + 4) > end)
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			__u32 pr = match_rule(st, NLB_RULE_VIP6, vip6, bpf_ntohs(*(__u16 *)(l4 + 2)), c.proto, 0);
			if (pr < NLB_MAX_RULES && st->rules[pr].mode == 3)
				return finish(skb, pr, R_DROP_RULE_DISABLED, NO_BUCKET);
		}
		__u32 ti = match_rule(st, NLB_RULE_VIP6, vip6, 0, c.proto, 1);
		return decide6_flow(skb, st, ti, &f, C_STATELESS, 0, 0);
	}
	if (c.proto == IPPROTO_TCP) {
		if (!IN6(14, off, 20, iplen))
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		struct tcphdr *th = (void *)ip6 + off;
		if ((void *)(th + 1) > end)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		__u32 doff = th->doff * 4;
		if (doff < 20 || iplen - off < doff)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		f.cport = bpf_ntohs(th->source);
		f.vport = bpf_ntohs(th->dest);
		int class = (th->syn && !th->ack) ? C_TCP_SYN : C_TCP;
		__u32 ti = match_rule(st, NLB_RULE_VIP6, vip6, f.vport, IPPROTO_TCP, 0);
		return decide6_flow(skb, st, ti, &f, class, ip6, th);
	}
	if (c.proto == IPPROTO_UDP) {
		if (!IN6(14, off, 8, iplen))
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		l4 = (void *)ip6 + off;
		if ((void *)(l4 + 8) > end)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		f.cport = bpf_ntohs(*(__u16 *)l4);
		f.vport = bpf_ntohs(*(__u16 *)(l4 + 2));
		if (st->remote_port && f.vport == st->remote_port)
			return finish(skb, NLB_NO_TABLE, R_PASS_REMOTE, NO_BUCKET);
		__u32 ti = match_rule(st, NLB_RULE_VIP6, vip6, f.vport, IPPROTO_UDP, 0);
		return decide6_flow(skb, st, ti, &f, C_STATELESS, 0, 0);
	}
	if (c.proto == IPPROTO_ICMPV6_) {
		if (!IN6(14, off, 8, iplen))
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		l4 = (void *)ip6 + off;
		if ((void *)(l4 + 8) > end)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		__u8 type = l4[0];
		if (type >= 1 && type <= 4) {
			/* An error quoting a packet the cluster sent from the VIP
			 * to a client: decide as that flow. */
			__u32 q = off + 8;
			if (!IN6(14, q, 40, iplen))
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			struct ipv6hdr *in = (void *)ip6 + q;
			if ((void *)(in + 1) > end)
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			__u32 *isrc = (__u32 *)&in->saddr;
			if (in->version != 6 || isrc[0] != f.vip[0] || isrc[1] != f.vip[1] ||
			    isrc[2] != f.vip[2] || isrc[3] != f.vip[3])
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			__builtin_memcpy(f.client, &in->daddr, 16);
			struct chain6 ic = {};
			if (!walk6(data, end, 14 + q, iplen - q, &ic) || (ic.frag && ic.frag_off != 0))
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			if (ic.proto != IPPROTO_TCP && ic.proto != IPPROTO_UDP)
				return decide6_flow(skb, st, NLB_DEFAULT_RULE, &f, C_STATELESS, 0, 0);
			__u32 ioff = ic.off;
			if (!IN6(14 + q, ioff, 8, iplen - q) || q + ioff > HDR_WINDOW6)
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			__u16 *ip = (void *)ip6 + q + ioff;
			if ((void *)(ip + 4) > end)
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			f.vport = bpf_ntohs(ip[0]);
			f.cport = bpf_ntohs(ip[1]);
			__u32 ti = match_rule(st, NLB_RULE_VIP6, vip6, f.vport, ic.proto, 0);
			return decide6_flow(skb, st, ti, &f, ic.proto == IPPROTO_TCP ? C_TCP : C_STATELESS, 0, 0);
		}
		if ((type >= 130 && type <= 137) || type == 143)
			return finish(skb, NLB_NO_TABLE, R_PASS_ARP, NO_BUCKET);
		/* Echo requests and other ICMPv6: the default host. */
	}
	return decide6_flow(skb, st, NLB_DEFAULT_RULE, &f, C_STATELESS, 0, 0);
}

/* hb_admit: filter.HeartbeatSources.Admit. Once the agent has seen a host
 * ID's frames authenticate (and be admitted) from an Ethernet source, it
 * binds the ID to that source: frames claiming the ID from any other
 * source are dropped until the bound one has been silent for hb_stale_ns.
 * The bound source's frames pass within a GCRA budget of their own
 * (hb_interval_ns per frame, bursts up to hb_tolerance_ns ahead); while an
 * ID is unbound, every frame claiming it shares a smaller one (the open
 * interval and tolerance). Two CPUs
 * may race on one entry: the budget is then approximate, which is all it
 * needs to be. */
static __always_inline __u32 hb_admit(struct nlb_state *st, __u8 id, __u8 *mac)
{
	if (!st || st->hb_interval_ns == 0)
		return R_PASS_HEARTBEAT;
	if (id == 0 || id > NLB_MAX_HOST_ID)
		return R_DROP_MALFORMED;
	__u32 key = id;
	struct nlb_hb_src *s = bpf_map_lookup_elem(&nlb_hb_sources, &key);
	if (!s)
		return R_DROP_MALFORMED;
	__u64 now = bpf_ktime_get_ns();
	__u64 interval = st->hb_open_interval_ns, tolerance = st->hb_open_tolerance_ns;
	if (s->verified) {
		int same = 1;
#pragma unroll
		for (int i = 0; i < 6; i++)
			same &= s->mac[i] == mac[i];
		if (!same) {
			/* Signed: another CPU may have stamped last after we
			 * read now; that is a fresh holder, not a stale one. */
			if ((__s64)(now - s->last) < (__s64)st->hb_stale_ns)
				return R_DROP_HB_SOURCE;
			s->verified = 0; /* the bound source went silent: unbound */
		} else {
			s->last = now;
			interval = st->hb_interval_ns;
			tolerance = st->hb_tolerance_ns;
		}
	}
	__u64 tat = s->tat > now ? s->tat : now;
	if (tat - now > tolerance)
		return R_DROP_HB_BUDGET;
	s->tat = tat + interval;
	return R_PASS_HEARTBEAT;
}

/* Enough of the frame for every header we read: Ethernet, IPv4 with
 * options, ICMP, the quoted IPv4 header with options, 8 bytes of ports. */
#define PULL_LEN (14 + 60 + 8 + 60 + 8)

SEC("tc")
int nlb_ingress(struct __sk_buff *skb)
{
	void *data, *end;
	pull(skb, PULL_LEN, &data, &end);
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return finish(skb, NLB_NO_TABLE, R_PASS_NOT_IP, NO_BUCKET);
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return finish(skb, NLB_NO_TABLE, R_PASS_ARP, NO_BUCKET);
	if (eth->h_proto == bpf_htons(ETH_P_NLB_HB)) {
		/* Only what opens like a heartbeat of this cluster reaches the
		 * agent: magic, version, primary VIP, a host ID
		 * (filter.decideHeartbeat), within its source's budget. */
		__u8 *m = (void *)(eth + 1);
		if ((void *)(m + 13) > end || *(__u32 *)m != bpf_htonl(NLB_HB_MAGIC) || m[4] != NLB_HB_VERSION)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		struct nlb_state *hst = active_state();
		/* The cluster's four bytes: the primary VIP, IPv4 first; an
		 * IPv6-only cluster's primary gives its last four bytes. */
		if (hst && hst->n_vips > 0 && *(__u32 *)(m + 8) != hst->vips[0])
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		if (hst && hst->n_vips == 0 && hst->n_vips6 > 0 &&
		    *(__u32 *)(m + 8) != *(__u32 *)&hst->vips6[0][12])
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		return finish(skb, NLB_NO_TABLE, hb_admit(hst, m[12], eth->h_source), NO_BUCKET);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6_))
		return decide6(skb);
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return finish(skb, NLB_NO_TABLE, R_PASS_NOT_IP, NO_BUCKET);

	struct iphdr *iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > end)
		return finish(skb, NLB_NO_TABLE, R_PASS_SHORT, NO_BUCKET);

	struct nlb_state *st = active_state();
	if (!st)
		return finish(skb, NLB_NO_TABLE, R_PASS_NOT_VIP, NO_BUCKET);
	__u32 dst = iph->daddr;
	int is_vip = 0;
	for (__u32 i = 0; i < NLB_MAX_VIPS; i++) {
		if (i >= st->n_vips)
			break;
		if (st->vips[i] == dst) {
			is_vip = 1;
			break;
		}
	}
	if (!is_vip)
		return finish(skb, NLB_NO_TABLE, R_PASS_NOT_VIP, NO_BUCKET);

	/* From here on the frame is for a VIP: broken headers are dropped. */
	__u32 ihl = iph->ihl * 4;
	__u32 tot = bpf_ntohs(iph->tot_len);
	__u32 avail = (__u32)(end - (void *)iph);
	if (iph->version != 4 || ihl < 20 || tot < ihl || avail < ihl)
		return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
	__u32 l4len = (tot < avail ? tot : avail) - ihl; /* Ethernet padding excluded */
	__u32 src = iph->saddr;

	void *l4 = (void *)iph + (ihl & 0x3c);
	if (iph->frag_off & bpf_htons(0x3fff)) {
		/* Every fragment goes where the client address hashes in the
		 * fragment rule; a first fragment to a disabled rule's port is
		 * dropped everywhere, so the datagram is never reassembled. */
		if (!(iph->frag_off & bpf_htons(0x1fff)) &&
		    (iph->protocol == IPPROTO_TCP || iph->protocol == IPPROTO_UDP) && l4len >= 4) {
			__u16 *ports = l4;
			if ((void *)(ports + 2) > end)
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			__u32 pr = match_rule(st, dst, 0, bpf_ntohs(ports[1]), iph->protocol, 0);
			if (pr < NLB_MAX_RULES && st->rules[pr].mode == 3)
				return finish(skb, pr, R_DROP_RULE_DISABLED, NO_BUCKET);
		}
		__u32 ti = match_rule(st, dst, 0, 0, iph->protocol, 1);
		return decide4(skb, st, ti, src, 0, dst, 0, C_STATELESS, 0, 0);
	}
	if (iph->protocol == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if (l4len < 20 || (void *)(th + 1) > end)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		__u32 doff = th->doff * 4;
		if (doff < 20 || l4len < doff)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		__u16 sport = bpf_ntohs(th->source), dport = bpf_ntohs(th->dest);
		int class = (th->syn && !th->ack) ? C_TCP_SYN : C_TCP;
		__u32 ti = match_rule(st, dst, 0, dport, IPPROTO_TCP, 0);
		return decide4(skb, st, ti, src, sport, dst, dport, class, iph, th);
	}
	if (iph->protocol == IPPROTO_UDP) {
		__u16 *ports = l4;
		if (l4len < 8 || (void *)(ports + 4) > end)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		__u16 sport = bpf_ntohs(ports[0]), dport = bpf_ntohs(ports[1]);
		if (st->remote_port && dport == st->remote_port)
			return finish(skb, NLB_NO_TABLE, R_PASS_REMOTE, NO_BUCKET);
		__u32 ti = match_rule(st, dst, 0, dport, IPPROTO_UDP, 0);
		return decide4(skb, st, ti, src, sport, dst, dport, C_STATELESS, 0, 0);
	}
	if (iph->protocol == IPPROTO_ICMP_) {
		__u8 *icmp = l4;
		if (l4len < 8 || (void *)(icmp + 8) > end)
			return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
		__u8 type = icmp[0];
		if (type == 3 || type == 11 || type == 12) {
			/* An error quoting a packet the cluster sent from dst to a
			 * client: decide as that flow. */
			struct iphdr *in = (void *)(icmp + 8);
			__u32 inlen = l4len - 8;
			if (inlen < 20 || (void *)(in + 1) > end)
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			__u32 iihl = in->ihl * 4;
			if (in->version != 4 || iihl < 20 || in->saddr != dst)
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			if (in->frag_off & bpf_htons(0x1fff))
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			__u32 client = in->daddr;
			if (in->protocol != IPPROTO_TCP && in->protocol != IPPROTO_UDP)
				return decide4(skb, st, NLB_DEFAULT_RULE, client, 0, dst, 0, C_STATELESS, 0, 0);
			__u16 *ip = (void *)in + (iihl & 0x3c);
			if (inlen < iihl + 8 || (void *)(ip + 4) > end)
				return finish(skb, NLB_NO_TABLE, R_DROP_MALFORMED, NO_BUCKET);
			__u16 vport = bpf_ntohs(ip[0]), cport = bpf_ntohs(ip[1]);
			__u32 ti = match_rule(st, dst, 0, vport, in->protocol, 0);
			int class = in->protocol == IPPROTO_TCP ? C_TCP : C_STATELESS;
			return decide4(skb, st, ti, client, cport, dst, vport, class, 0, 0);
		}
		/* Echo requests and other ICMP: the default host. */
		return decide4(skb, st, NLB_DEFAULT_RULE, src, 0, dst, 0, C_STATELESS, 0, 0);
	}
	return decide4(skb, st, NLB_DEFAULT_RULE, src, 0, dst, 0, C_STATELESS, 0, 0);
}

/* Unicast mode: rewrite the cluster MAC in outgoing source addresses to
 * this host's masked MAC, so switches never learn the cluster MAC and keep
 * flooding it to every host. */
SEC("tc")
int nlb_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	struct nlb_state *st = active_state();
	if (!st || !st->mask_mac)
		return TC_ACT_OK;
	for (int i = 0; i < 6; i++)
		if (eth->h_source[i] != st->cluster_mac[i])
			return TC_ACT_OK;
	for (int i = 0; i < 6; i++)
		eth->h_source[i] = st->masked_mac[i];
	return TC_ACT_OK;
}

/* An empty program: the benchmark's baseline in the same harness. */
SEC("tc")
int nlb_noop(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}
