// Package filter holds the per-flow decision of nlb: the flow key, the keyed
// hash, port-rule matching, bucket tables and the accept/drop decision as a
// pure Go model, plus the eBPF program that makes the same decision in the
// kernel and the code that loads and attaches it.
//
// The Go model (Decide) is the reference. The eBPF program must agree with it
// bit for bit; TestDatapathMatchesModel proves that on generated frames.
package filter

import (
	"fmt"
	"net/netip"
)

// Protocol constants. These sizes are part of the data-plane ABI shared with
// filter/datapath/bpf/nlb.c and the heartbeat digest; change them only with a version
// bump.
const (
	// Buckets is the number of buckets per port rule (B). A power of two so
	// that the bucket is a mask of the hash.
	Buckets = 4096
	// MaxVIPs is the largest number of virtual IPs in one cluster.
	MaxVIPs = 16
	// MaxRules is the largest number of port rules (as in NLB).
	MaxRules = 32
	// DefaultRule is the index of the pseudo-rule that carries traffic to a
	// VIP that matches no port rule (and ICMP echo). It always has a table.
	DefaultRule = MaxRules
	// MaxHostID is the largest host ID.
	MaxHostID = 64
	// HeartbeatMagic and HeartbeatVersion open every heartbeat frame
	// ("NLBH", version 2 since the echoes; package heartbeat's wire format): the data plane
	// checks them, and the cluster VIP after them, before a frame with
	// the heartbeat ethertype reaches the agent.
	HeartbeatMagic   = 0x4e4c4248
	HeartbeatVersion = 2
)

// Protocol is the transport protocol a port rule matches. The zero value is
// invalid. Values are append-only (they appear in the config digest).
type Protocol uint8

const (
	ProtoTCP  Protocol = 1
	ProtoUDP  Protocol = 2
	ProtoBoth Protocol = 3
)

func (p Protocol) String() string {
	switch p {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	case ProtoBoth:
		return "both"
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// Matches reports whether IP protocol number ipProto is covered by p.
func (p Protocol) Matches(ipProto uint8) bool {
	switch ipProto {
	case ipProtoTCP:
		return p&ProtoTCP != 0
	case ipProtoUDP:
		return p&ProtoUDP != 0
	}
	return false
}

// Mode is a port rule's filtering mode. The zero value is invalid.
type Mode uint8

const (
	// ModeMultiple spreads the rule's traffic over all live hosts by weight.
	ModeMultiple Mode = 1
	// ModeSingle sends all of the rule's traffic to the live host with the
	// best (lowest) handling priority.
	ModeSingle Mode = 2
	// ModeDisabled drops the rule's traffic on every host.
	ModeDisabled Mode = 3
)

func (m Mode) String() string {
	switch m {
	case ModeMultiple:
		return "multiple"
	case ModeSingle:
		return "single"
	case ModeDisabled:
		return "disabled"
	}
	return fmt.Sprintf("mode(%d)", uint8(m))
}

// Affinity selects which client fields feed the hash. The zero value is
// invalid.
type Affinity uint8

const (
	// AffinityNone hashes client IP and client port.
	AffinityNone Affinity = 1
	// AffinitySingle hashes the client IP only.
	AffinitySingle Affinity = 2
	// AffinityNetwork hashes the client's /24 (IPv4).
	AffinityNetwork Affinity = 3
)

func (a Affinity) String() string {
	switch a {
	case AffinityNone:
		return "none"
	case AffinitySingle:
		return "single"
	case AffinityNetwork:
		return "network"
	}
	return fmt.Sprintf("affinity(%d)", uint8(a))
}

// PortRule says how traffic to a VIP and port range is spread.
type PortRule struct {
	// VIP is the rule's virtual IP; the zero Addr means all VIPs.
	VIP       netip.Addr
	StartPort uint16
	EndPort   uint16
	Protocol  Protocol
	Mode      Mode
	Affinity  Affinity
}

// AllVIPs reports whether the rule applies to every VIP.
func (r PortRule) AllVIPs() bool { return !r.VIP.IsValid() }

// String names the rule the way operators write it: "all:80/tcp",
// "198.18.0.10:8000-8100/both".
func (r PortRule) String() string {
	v := "all"
	if !r.AllVIPs() {
		v = r.VIP.String()
	}
	if r.StartPort == r.EndPort {
		return fmt.Sprintf("%s:%d/%s", v, r.StartPort, r.Protocol)
	}
	return fmt.Sprintf("%s:%d-%d/%s", v, r.StartPort, r.EndPort, r.Protocol)
}

// Mark is this host's handoff state of one bucket (DESIGN.md §4). Values
// are shared with the eBPF program (enum nlb_mark) and append-only.
type Mark uint8

const (
	// MarkNone: another host owns the bucket and this host holds no flows
	// in it. Packets are dropped without a socket lookup.
	MarkNone Mark = 0
	// MarkOwned: this host owns the bucket; every packet is accepted.
	MarkOwned Mark = 1
	// MarkDirty: this host owns the bucket but another host may still hold
	// flows in it. SYNs and flows this host holds are accepted, other TCP
	// packets dropped.
	MarkDirty Mark = 2
	// MarkRetained: this host gave the bucket away but may still hold flows
	// in it. Only packets of flows this host holds are accepted.
	MarkRetained Mark = 3
)

func (m Mark) String() string {
	switch m {
	case MarkNone:
		return "none"
	case MarkOwned:
		return "owned"
	case MarkDirty:
		return "dirty"
	case MarkRetained:
		return "retained"
	}
	return fmt.Sprintf("mark(%d)", uint8(m))
}

// Table maps each bucket of a rule to the ID of its owning host; 0 means the
// bucket has no owner (every host drops it).
type Table [Buckets]uint8

// Marks is one host's handoff mark for each bucket of a rule.
type Marks [Buckets]Mark

// MarksFor returns the marks of host id for a settled table: owned where
// the table names id, none elsewhere.
func (t *Table) MarksFor(id uint8) *Marks {
	var m Marks
	for b, owner := range t {
		if owner == id && id != 0 {
			m[b] = MarkOwned
		}
	}
	return &m
}

// Uniform returns a table whose every bucket is owned by id.
func Uniform(id uint8) *Table {
	var t Table
	for b := range t {
		t[b] = id
	}
	return &t
}

// Counts returns the number of buckets each host owns, indexed by host ID.
func (t *Table) Counts() [MaxHostID + 1]int {
	var c [MaxHostID + 1]int
	for _, owner := range t {
		if int(owner) <= MaxHostID {
			c[owner]++
		}
	}
	return c
}

// RuleSetting is one host's setting for one port rule, as the bucket
// tables use it. (The heartbeat carries it in a compact wire form,
// heartbeat.RuleSetting, with the host's drain and disable flags.)
type RuleSetting struct {
	// Weight is the load weight (0..100) for multiple-host rules.
	Weight uint32
	// Priority is the handling priority (1 = best) for single-host rules.
	Priority int
}
