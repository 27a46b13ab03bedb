// Package config is nlb's configuration: the YAML schema with its
// defaults, strict parsing, validation with errors that name the key, and
// resolution into the typed values the rest of nlb uses (Resolved), with
// the digest hosts compare and the summary nlbd --check-config prints. It
// touches nothing on the host; it reads only the key file.
package config

import (
	"fmt"
	"time"

	"github.com/nlbproject/nlb/macmode"
	"gopkg.in/yaml.v3"
)

// Config is one host's configuration file. The cluster section must be
// identical on every host (hosts whose cluster settings differ are not
// admitted); the host section is this host's own.
type Config struct {
	Cluster ClusterConfig `yaml:"cluster"`
	Host    HostConfig    `yaml:"host"`
}

// ClusterConfig is the part of the configuration every host shares.
type ClusterConfig struct {
	// Name identifies the cluster in logs and metrics.
	Name string `yaml:"name"`
	// VIPs are the virtual IP addresses, IPv4 and IPv6; the first is the
	// primary VIP from which the cluster MACs are derived, and must be
	// IPv4.
	VIPs []string `yaml:"vips"`
	// IPv6NetworkPrefix is the IPv6 client prefix length that `network`
	// affinity keeps together (1–128; 0: 64).
	IPv6NetworkPrefix int `yaml:"ipv6_network_prefix"`
	// MACMode is unicast, multicast or igmp.
	MACMode string `yaml:"mac_mode"`
	// Heartbeat timing.
	Heartbeat HeartbeatConfig `yaml:"heartbeat"`
	// HashSeed is 32 hex digits; empty derives the seed from the key.
	HashSeed string `yaml:"hash_seed"`
	// KeyFile holds the cluster key (at least 32 bytes) that authenticates
	// heartbeats; only hosts hold it.
	KeyFile string `yaml:"key_file"`
	// NextKeyFile, during a key rotation, holds the key that is accepted
	// besides the current one (docs/operations.md, "Rotating keys").
	NextKeyFile string `yaml:"next_key_file"`
	// RemoteControl is the UDP control channel used by nlbctl.
	RemoteControl RemoteControlConfig `yaml:"remote_control"`
	// PortRules say how traffic is spread.
	PortRules []PortRuleConfig `yaml:"port_rules"`
	// Quorum is "majority" (the default: a host takes new flows only
	// while it hears, and is heard by, a majority of the voters, so the
	// minority side of a partition stops) or "off" (as NLB, both sides
	// serve). See docs/architecture.md, "Partitions".
	Quorum string `yaml:"quorum"`
	// QuorumVoters, when not 0, makes hosts 1..QuorumVoters the voters
	// (strict majority); 0: the voters are the members of the last
	// epoch agreed.
	QuorumVoters int `yaml:"quorum_voters"`
	// Grace is how long buckets inherited from a host declared dead stay
	// dirty (new connections and our own flows only), so that a host that
	// is alive after all keeps its connections (docs/architecture.md).
	Grace Duration `yaml:"grace"`
}

// HeartbeatConfig sets the heartbeat period and how many may be missed.
type HeartbeatConfig struct {
	Period        Duration `yaml:"period"`
	LossTolerance int      `yaml:"loss_tolerance"`
}

// RemoteControlConfig enables UDP remote control.
type RemoteControlConfig struct {
	Enabled bool   `yaml:"enabled"`
	Port    uint16 `yaml:"port"`
	// AdminKeyFile authenticates commands (nlbctl --key-file on an
	// admin's machine); empty: the cluster key does.
	AdminKeyFile     string `yaml:"admin_key_file"`
	NextAdminKeyFile string `yaml:"next_admin_key_file"`
	// MonitorKeyFile authenticates the read-only commands (query, params,
	// ip2mac, filter, watch); empty: the admin key does.
	MonitorKeyFile     string `yaml:"monitor_key_file"`
	NextMonitorKeyFile string `yaml:"next_monitor_key_file"`
}

// PortRuleConfig is one port rule as written in the file.
type PortRuleConfig struct {
	// Name refers to the rule from the host section and nlbctl; default
	// "<vip|all>:<ports>/<protocol>".
	Name     string `yaml:"name"`
	VIP      string `yaml:"vip"`
	Ports    string `yaml:"ports"`
	Protocol string `yaml:"protocol"`
	Mode     string `yaml:"mode"`
	Affinity string `yaml:"affinity"`
}

// HostConfig is this host's own part of the configuration.
type HostConfig struct {
	// ID is the host's unique ID (1..filter.MaxHostID); it is also its default-host
	// priority (lowest live ID is the default host).
	ID int `yaml:"id"`
	// Interface is the cluster NIC.
	Interface string `yaml:"interface"`
	// DedicatedIP is this host's own address on the cluster NIC, with its
	// prefix length (e.g. 198.18.1.1/24).
	DedicatedIP string `yaml:"dedicated_ip"`
	// DedicatedIP6 is, optionally, the host's own IPv6 address on the
	// cluster NIC with its prefix length (e.g. 2001:2::1/64): remote
	// control answers there too, so nlbctl --host reaches this host over
	// IPv6. (The IPv4 dedicated address stays required: heartbeats and
	// BGP name the host by it.)
	DedicatedIP6 string `yaml:"dedicated_ip6"`
	// InitialState is started, stopped or suspended.
	InitialState string `yaml:"initial_state"`
	// MetricsAddress is the listen address of the Prometheus endpoint;
	// empty disables it.
	MetricsAddress string `yaml:"metrics_address"`
	// Rules holds per-rule settings keyed by rule name.
	Rules map[string]HostRuleConfig `yaml:"rules"`
	// OnExit is what SIGTERM/SIGINT do: drainstop (drain, then leave and
	// restore the NIC), stop (leave at once) or keep (exit leaving the
	// data plane and NIC in place for a restarted agent to adopt).
	OnExit string `yaml:"on_exit"`
	// DrainTimeout ends a drainstop even if connections remain (0: wait
	// for them all).
	DrainTimeout Duration `yaml:"drain_timeout"`
	// AllowReadableKeyFiles accepts key files that group or others can
	// read (refused by default).
	AllowReadableKeyFiles bool `yaml:"allow_readable_key_files"`
	// RetainState keeps the operator's state (started, stopped,
	// suspended; rules disabled or drained) across agent restarts and
	// reboots, in the data directory; it then overrides InitialState.
	RetainState bool `yaml:"retain_state"`
	// Notify runs a command on each event of this host.
	Notify *NotifyConfig `yaml:"notify"`
	// BGP announces the VIPs to routers (docs/scale-out.md).
	BGP *BGPConfig `yaml:"bgp"`
}

// NotifyConfig is host.notify: a command run (no shell) on each event
// with the event in NLB_EVENT_* environment variables.
type NotifyConfig struct {
	// Command is the program and its arguments.
	Command []string `yaml:"command"`
	// Timeout kills a run that takes longer (default 10s).
	Timeout Duration `yaml:"timeout"`
	// Events limits the kinds that run it (default: every kind).
	Events []string `yaml:"events"`
}

// HostRuleConfig is this host's setting for one port rule.
type HostRuleConfig struct {
	// Weight is 0..100 or "equal" (= 50) for multiple-host rules.
	Weight string `yaml:"weight"`
	// Priority is this host's handling priority (1 = best) for
	// single-host rules; default the host ID.
	Priority int `yaml:"priority"`
	// Health, if set, checks the local service: while it fails, this host
	// drains the rule.
	Health *HealthConfig `yaml:"health"`
}

// HealthConfig is a rule's local health check.
type HealthConfig struct {
	// Type is tcp, http, https or exec.
	Type     string   `yaml:"type"`
	Address  string   `yaml:"address"` // tcp: host:port
	URL      string   `yaml:"url"`     // http(s)
	Command  []string `yaml:"command"` // exec: argv
	Expect   int      `yaml:"expect"`  // http(s) status; 0: 200–399
	Interval Duration `yaml:"interval"`
	Timeout  Duration `yaml:"timeout"`
	Rise     int      `yaml:"rise"`
	Fall     int      `yaml:"fall"`
}

// Health-check defaults.
const (
	DefaultHealthInterval = time.Second
	DefaultHealthTimeout  = time.Second
	DefaultHealthRise     = 2
	DefaultHealthFall     = 2
)

// Duration is a time.Duration written as "200ms".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (e.g. 200ms)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// Defaults. Each is documented in docs/config.md.
const (
	// DefaultHeartbeatPeriod: 10 × 30 ms = 300 ms to detect a failed
	// host, against NLB's 5 × 1 s: the fastest window of the measured
	// detection curve with no false eviction under both cores saturated,
	// 10 % heartbeat loss and a junk flood (failover p99 ≈ 330-394 ms; docs/
	// benchmarks.md, "Detection curve"). Ten losses in a row, not five:
	// at 10 % loss 5 × 200 ms evicted live hosts in simulation.
	DefaultHeartbeatPeriod = 30 * time.Millisecond
	// DefaultLossTolerance is the number of consecutive missed heartbeats
	// after which a peer is declared dead.
	DefaultLossTolerance = 10
	// DefaultRemotePort is NLB's remote-control port.
	DefaultRemotePort = 2504
	// EqualWeight is the weight "equal" stands for.
	EqualWeight = 50
	// MinKeyLen is the shortest accepted cluster key, in bytes.
	MinKeyLen = 32
	// DefaultGrace: a host whose agent died but whose connections live
	// keeps them for 5 s more after being declared dead; its peers accept
	// only new connections in its old buckets meanwhile.
	DefaultGrace = 5 * time.Second
	// DefaultDrainTimeout bounds how long a stop by signal waits for
	// connections to end.
	DefaultDrainTimeout = 30 * time.Second
)

// DefaultConfig returns a configuration with every optional field set to
// its default. Required fields (VIPs, key file, host ID, interface,
// dedicated IP) are left empty.
func DefaultConfig() Config {
	return Config{
		Cluster: ClusterConfig{
			Name:    "nlb",
			MACMode: string(macmode.Unicast), // NLB's default mode
			Heartbeat: HeartbeatConfig{
				Period:        Duration(DefaultHeartbeatPeriod),
				LossTolerance: DefaultLossTolerance,
			},
			RemoteControl: RemoteControlConfig{Enabled: false, Port: DefaultRemotePort},
			Grace:         Duration(DefaultGrace),
		},
		Host: HostConfig{InitialState: string(StartStarted), OnExit: string(ExitDrainStop), DrainTimeout: Duration(DefaultDrainTimeout)},
	}
}

// InitialState is the state a host starts in (host.initial_state).
type InitialState string

const (
	// StartStarted joins the cluster and takes a share of the traffic.
	StartStarted InitialState = "started"
	// StartStopped starts with the host out of the cluster, until an
	// operator's start.
	StartStopped InitialState = "stopped"
	// StartSuspended starts suspended: stopped, and deaf to start until
	// resume.
	StartSuspended InitialState = "suspended"
)

// ExitMode is how the agent leaves on SIGTERM/SIGINT (host.on_exit).
type ExitMode string

const (
	// ExitDrainStop drains, then leaves the cluster and restores the NIC.
	ExitDrainStop ExitMode = "drainstop"
	// ExitStop leaves at once (this host's connections end) and restores.
	ExitStop ExitMode = "stop"
	// ExitKeep exits leaving the data plane and NIC as they are: the
	// lease runs out by itself and a restarted agent adopts them.
	ExitKeep ExitMode = "keep"
)
