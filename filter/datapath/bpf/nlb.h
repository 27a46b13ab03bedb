/* Shared layout of the nlb data plane. filter/datapath.go mirrors these
 * structures byte for byte (stateLayout); change both together. */
#ifndef NLB_H
#define NLB_H

#define NLB_BUCKETS 4096
#define NLB_MAX_VIPS 16
#define NLB_MAX_RULES 32
#define NLB_DEFAULT_RULE NLB_MAX_RULES     /* table for traffic matching no rule */
#define NLB_TABLES (NLB_MAX_RULES + 1)
#define NLB_NO_TABLE NLB_TABLES           /* counter row for unfiltered classes */
#define NLB_NUM_REASONS 16
#define NLB_MAX_HOST_ID 64 /* filter.MaxHostID */
#define NLB_HB_MAGIC 0x4e4c4248 /* filter.HeartbeatMagic, "NLBH" */
#define NLB_HB_VERSION 2        /* filter.HeartbeatVersion */

/* enum nlb_reason mirrors filter.Reason (append-only). */
enum nlb_reason {
	R_INVALID = 0,
	R_PASS_NOT_IP = 1,
	R_PASS_ARP = 2,
	R_PASS_HEARTBEAT = 3,
	R_PASS_NOT_VIP = 4,
	R_PASS_SHORT = 5,
	R_PASS_REMOTE = 6,
	R_ACCEPT_OWNER = 7,
	R_ACCEPT_HELD = 8,
	R_DROP_NOT_OWNER = 9,
	R_DROP_DIRTY_NON_SYN = 10,
	R_DROP_RULE_DISABLED = 11,
	R_DROP_MALFORMED = 12,
	R_DROP_LEASE_EXPIRED = 13,
	R_DROP_HB_SOURCE = 14,
	R_DROP_HB_BUDGET = 15,
};

/* enum nlb_mark mirrors filter.Mark. */
enum nlb_mark { M_NONE = 0, M_OWNED = 1, M_DIRTY = 2, M_RETAINED = 3 };

struct nlb_rule {           /* 12 bytes */
	__u32 vip;              /* network order; 0 = all VIPs */
	__u16 port_lo, port_hi; /* host order */
	__u8 proto;             /* bit 1 TCP, bit 2 UDP (filter.Protocol) */
	__u8 mode;              /* filter.Mode */
	__u8 affinity;          /* filter.Affinity */
	__u8 vip6;              /* an IPv6 rule's VIP: 1 + its index in vips6
	                         * (vip is then NLB_RULE_VIP6); 0 otherwise */
};

#define NLB_RULE_VIP6 0xffffffff /* never an IPv4 VIP (the broadcast address) */

struct nlb_state {
	__u64 seed0, seed1;               /*   0: hash key halves k0, k1 */
	__u32 vips[NLB_MAX_VIPS];         /*  16: network order */
	__u32 n_vips;                     /*  80 */
	__u32 n_rules;                    /*  84 */
	__u16 remote_port;                /*  88: host order, 0 = off */
	__u8 mask_mac;                    /*  90: egress rewrites cluster_mac */
	__u8 host_id;                     /*  91 */
	__u8 cluster_mac[6];              /*  92 */
	__u8 masked_mac[6];               /*  98 */
	struct nlb_rule rules[NLB_MAX_RULES]; /* 104 */
	__u8 marks[NLB_TABLES][NLB_BUCKETS];  /* 488 */
	/* The heartbeat budget (filter.HeartbeatBudget); interval 0 = off. */
	__u64 hb_interval_ns;             /* 135656: one frame's share */
	__u64 hb_tolerance_ns;            /* 135664: (burst - 1) * interval */
	__u64 hb_stale_ns;                /* 135672 */
	__u64 hb_open_interval_ns;        /* 135680: the same, for an unbound ID */
	__u64 hb_open_tolerance_ns;       /* 135688 */
	/* IPv6 (decide6): VIPs, and `network` affinity's client prefix. */
	__u8 vips6[NLB_MAX_VIPS][16];     /* 135696 */
	__u32 n_vips6;                    /* 135952 */
	__u32 pad6;                       /* 135956 */
	__u64 net6_mask_hi;               /* 135960: host order */
	__u64 net6_mask_lo;               /* 135968; total 135976 */
};

/* One claimed host ID's source (filter.HeartbeatSources). */
struct nlb_hb_src {
	__u8 mac[6];   /* the Ethernet source that holds this ID */
	__u8 verified; /* set by the agent: mac's frames for this ID authenticated */
	__u8 pad;
	__u64 tat;     /* GCRA theoretical arrival time, CLOCK_MONOTONIC ns */
	__u64 last;    /* last frame from mac, ns (0 = never) */
};

#endif
