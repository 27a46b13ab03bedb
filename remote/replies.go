package remote

import (
	"encoding/json"
	"fmt"
	"path/filepath"
)

// The reply schema of the control protocol: what each command's Reply.Data
// holds, as nlbd writes it and nlbctl reads it. Fields are append-only;
// their JSON names are the --json contract (docs/cli.md).

// QueryResult is one host's answer to query.
type QueryResult struct {
	Host  uint8  `json:"host"`
	State string `json:"state"`
	// Why is the reason of the last state change.
	Why         string  `json:"why,omitempty"`
	Epoch       uint64  `json:"epoch"`
	Members     HostIDs `json:"members"`
	DefaultHost uint8   `json:"default_host"`
	Heard       HostIDs `json:"heard"`
	// Convergences completed since the agent started, and the last one's
	// duration.
	Convergences      uint64  `json:"convergences"`
	LastConvergenceMS float64 `json:"last_convergence_ms"`
	// Owned is the number of buckets this host takes new flows in, per
	// rule name ("default" for traffic matching no rule).
	Owned       map[string]int `json:"owned_buckets"`
	LeaseValid  bool           `json:"lease_valid"`
	Incarnation uint64         `json:"incarnation"`
	Uptime      string         `json:"uptime"`
	// Version is the agent's build (nlbd --version).
	Version string `json:"version"`
	// PriorityConflicts lists single-host rules whose handling priority
	// two or more live hosts share (the lowest ID takes the rule).
	PriorityConflicts []PriorityConflict `json:"priority_conflicts"`
	// RemoteRefused counts remote-control datagrams refused, by reason.
	RemoteRefused map[string]uint64 `json:"remote_refused"`
	// Accepted and Dropped count VIP packets this host's data plane
	// accepted and dropped since it was loaded (nlbctl watch shows rates).
	Accepted uint64 `json:"accepted_packets"`
	Dropped  uint64 `json:"dropped_packets"`
	// Silent lists the peers this host stopped hearing while they took
	// part: a host whose agent died (its data plane may still filter) or
	// that was cut off.
	Silent []SilentPeer `json:"silent,omitempty"`
	// Health is each checked rule's status: "up", or "down: " and the
	// last failure ("down: http 503").
	Health map[string]string `json:"health,omitempty"`
	// BGP is the host's BGP speaker, when host.bgp is set.
	BGP *BGPStatus `json:"bgp,omitempty"`
}

// BGPStatus is a host's BGP speaker: the VIPs it announces (or why none),
// and each router session's state ("established", "active", …).
type BGPStatus struct {
	Announced []string          `json:"announced"`
	Withdrawn string            `json:"withdrawn_because,omitempty"`
	Peers     map[string]string `json:"peers"`
}

// SilentPeer is a peer gone quiet, as this host sees it.
type SilentPeer struct {
	Host     uint8   `json:"host"`
	SilentMS float64 `json:"silent_ms"`
	// LeaseExpired: silent for longer than a lease lasts, so its data
	// plane takes no new flows even if it still runs.
	LeaseExpired bool `json:"lease_expired"`
	// Evicted: silent for loss_tolerance periods; its buckets were
	// given to the others.
	Evicted bool `json:"evicted"`
}

// RuleResult answers enable, disable and drain.
type RuleResult struct {
	Rules []string `json:"rules"`
	Op    string   `json:"op"`
}

// IP2MACResult answers ip2mac.
type IP2MACResult struct {
	VIP       string `json:"vip"`
	Mode      string `json:"mode"`
	InUse     string `json:"cluster_mac"`
	Unicast   string `json:"unicast_mac"`
	Multicast string `json:"multicast_mac"`
	IGMP      string `json:"igmp_mac"`
	IGMPGroup string `json:"igmp_group"`
	// HostMAC is this host's masked source MAC (unicast mode).
	HostMAC string `json:"host_mac,omitempty"`
}

// FilterResult answers filter: this host's live decision for a flow.
type FilterResult struct {
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
	Rule    string `json:"rule"`
	Bucket  int    `json:"bucket"`
	// Owner is the bucket's owner in the agreed tables (0: none).
	Owner uint8 `json:"owner"`
}

// Params is the effective configuration params reports.
type Params struct {
	Cluster       string       `json:"cluster"`
	VIPs          []string     `json:"vips"`
	MACMode       string       `json:"mac_mode"`
	Period        string       `json:"heartbeat_period"`
	LossTolerance int          `json:"loss_tolerance"`
	RemotePort    uint16       `json:"remote_port"`
	Quorum        string       `json:"quorum"`
	QuorumVoters  int          `json:"quorum_voters"`
	Grace         string       `json:"grace"`
	Interface     string       `json:"interface"`
	DedicatedIP   string       `json:"dedicated_ip"`
	OnExit        string       `json:"on_exit"`
	DrainTimeout  string       `json:"drain_timeout"`
	Rules         []ParamsRule `json:"port_rules"`
	Digest        string       `json:"config_digest"`
}

// ParamsRule is one port rule with this host's setting.
type ParamsRule struct {
	Name     string `json:"name"`
	Spec     string `json:"spec"`
	Mode     string `json:"mode"`
	Affinity string `json:"affinity"`
	Weight   uint32 `json:"weight"`
	Priority int    `json:"priority"`
}

// SocketPath is the local control socket of an agent with this run
// directory; DefaultRunDir is nlbd's default (--run-dir).
func SocketPath(runDir string) string { return filepath.Join(runDir, "nlbd.sock") }

// DefaultRunDir is where nlbd keeps its control socket and NIC state file.
const DefaultRunDir = "/run/nlb"

// HostIDs is a list of host IDs. It is written in JSON as an array of
// numbers, [1,2,3] (a plain []uint8 would be written as a base64 string),
// and never as null.
type HostIDs []uint8

// MarshalJSON writes the IDs as an array of numbers.
func (h HostIDs) MarshalJSON() ([]byte, error) {
	out := make([]int, len(h))
	for i, id := range h {
		out[i] = int(id)
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads an array of numbers 0..255.
func (h *HostIDs) UnmarshalJSON(b []byte) error {
	var in []int
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	*h = make(HostIDs, len(in))
	for i, v := range in {
		if v < 0 || v > 255 {
			return fmt.Errorf("host ID %d out of range", v)
		}
		(*h)[i] = uint8(v)
	}
	return nil
}

// PriorityConflict is one rule's shared handling priority.
type PriorityConflict struct {
	Rule     string  `json:"rule"`
	Priority int     `json:"priority"`
	Hosts    HostIDs `json:"hosts"`
}

// Event is one entry of a host's event history (nlbctl events). Kinds
// are the convergence notices (join, leave, evict, state, …) and
// "command", "health", "reload", "refusal", "agent", "hook".
type Event struct {
	Seq  uint64 `json:"seq"`
	Time string `json:"time"` // RFC 3339 with nanoseconds, UTC
	Kind string `json:"kind"`
	// Host is the host the event is about (this host, or a peer).
	Host   uint8  `json:"host"`
	Detail string `json:"detail"`
	// Source is who asked, for commands: "local socket" or
	// "ADDR (admin key)".
	Source string `json:"source,omitempty"`
}

// EventsResult answers events: the oldest events after the request's
// Since that fit in one reply.
type EventsResult struct {
	// Boot identifies the agent run whose sequence numbers these are
	// (its start, Unix ns): after a restart, sequences begin again at 1.
	Boot int64 `json:"boot"`
	// First is the oldest sequence number still held; Last the newest.
	First  uint64  `json:"first"`
	Last   uint64  `json:"last"`
	Events []Event `json:"events"`
	// More: events after the last one returned did not fit.
	More bool `json:"more"`
}

// PortsResult answers ports: each rule's state on this host, its
// setting, buckets, counters and connections (queryport).
type PortsResult struct {
	Host  uint8      `json:"host"`
	State string     `json:"state"`
	Epoch uint64     `json:"epoch"`
	Rules []PortRule `json:"rules"`
}

// PortRule is one port rule ("default" for VIP traffic matching none) as
// one host sees it.
type PortRule struct {
	Name string `json:"name"`
	Spec string `json:"spec"`
	// State on this host: enabled, disabled, draining, or
	// "health-down" (drained by a failing check).
	State    string `json:"state"`
	Weight   uint32 `json:"weight"`
	Priority int    `json:"priority"`
	// Owned buckets take new flows here; Retained only carry held ones.
	Owned    int `json:"owned_buckets"`
	Retained int `json:"retained_buckets"`
	// Accepted and Dropped packets and accepted bytes since the data
	// plane was loaded.
	Accepted      uint64 `json:"accepted_packets"`
	Dropped       uint64 `json:"dropped_packets"`
	AcceptedBytes uint64 `json:"accepted_bytes"`
	// Connections this host holds for the rule (TCP sockets on a VIP).
	Connections int `json:"connections"`
	// Owners is the agreed owner of each bucket, two hex digits per
	// bucket in bucket order ("00": none), and Marks this host's handoff
	// mark of each, one character per bucket ("o" owned, "d" dirty, "r"
	// retained, "-" none); sent when asked for (Args.Buckets), for the
	// rule Args.Rule names (a map of 4096 buckets is 12 KB).
	Owners string `json:"owners,omitempty"`
	Marks  string `json:"marks,omitempty"`
}
