// Package agent is nlbd: configuration, lifecycle, and the wiring of the
// data plane, heartbeats, convergence, MAC mode and remote control.
package agent

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/health"
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
	// VIPs are the virtual IPv4 addresses; the first is the primary VIP
	// from which the cluster MACs are derived.
	VIPs []string `yaml:"vips"`
	// MACMode is unicast, multicast or igmp.
	MACMode string `yaml:"mac_mode"`
	// Heartbeat timing.
	Heartbeat HeartbeatConfig `yaml:"heartbeat"`
	// HashSeed is 32 hex digits; empty derives the seed from the key.
	HashSeed string `yaml:"hash_seed"`
	// KeyFile holds the shared cluster key (at least 32 bytes).
	KeyFile string `yaml:"key_file"`
	// RemoteControl is the UDP control channel used by nlbctl.
	RemoteControl RemoteControlConfig `yaml:"remote_control"`
	// PortRules say how traffic is spread.
	PortRules []PortRuleConfig `yaml:"port_rules"`
	// QuorumVoters, when not 0, makes hosts 1..QuorumVoters voters: a host
	// takes new flows only while it hears, and is heard by, a strict
	// majority of them (see docs/architecture.md, "Partitions").
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
	// ID is the host's unique ID (1..64); it is also its default-host
	// priority (lowest live ID is the default host).
	ID int `yaml:"id"`
	// Interface is the cluster NIC.
	Interface string `yaml:"interface"`
	// DedicatedIP is this host's own address on the cluster NIC, with its
	// prefix length (e.g. 198.18.1.1/24).
	DedicatedIP string `yaml:"dedicated_ip"`
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
	// DefaultHeartbeatPeriod: 10 × 100 ms = 1 s to detect a failed host,
	// against NLB's 5 × 1 s. At 10 % frame loss, 5 × 200 ms evicted live
	// hosts (3 in 10 simulated minutes, 8 hosts); 10 × 100 ms needs ten
	// losses in a row (docs/benchmarks.md).
	DefaultHeartbeatPeriod = 100 * time.Millisecond
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
			MACMode: "unicast", // NLB's default mode
			Heartbeat: HeartbeatConfig{
				Period:        Duration(DefaultHeartbeatPeriod),
				LossTolerance: DefaultLossTolerance,
			},
			RemoteControl: RemoteControlConfig{Enabled: false, Port: DefaultRemotePort},
			Grace:         Duration(DefaultGrace),
		},
		Host: HostConfig{InitialState: "started", OnExit: "drainstop", DrainTimeout: Duration(DefaultDrainTimeout)},
	}
}

// ConfigError is a configuration problem, naming the key and its value.
type ConfigError struct {
	Key   string
	Value string
	Msg   string
}

func (e *ConfigError) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %q: %s", e.Key, e.Value, e.Msg)
}

func cerr(key, value, format string, args ...any) error {
	return &ConfigError{Key: key, Value: value, Msg: fmt.Sprintf(format, args...)}
}

// LoadConfig reads, parses and validates a configuration file. It touches
// nothing on the host.
func LoadConfig(path string) (*Resolved, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	r, err := c.Resolve()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// ParseConfig parses YAML strictly (unknown keys are errors) over the
// defaults. It does not validate; call Resolve.
func ParseConfig(b []byte) (*Config, error) {
	c := DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("config is empty")
		}
		return nil, fmt.Errorf("parse: %w", err)
	}
	return &c, nil
}

// Resolved is a validated configuration in the types the rest of nlb uses.
type Resolved struct {
	Raw           Config
	Name          string
	VIPs          []netip.Addr
	MACMode       MACMode
	Period        time.Duration
	LossTolerance int
	Key           []byte
	Seed          filter.Seed
	RemotePort    uint16 // 0 when remote control is off
	// Rules are in canonical order (filter.SortRules); RuleNames[i] and
	// HostRules[i] belong to Rules[i].
	Rules     []filter.PortRule
	RuleNames []string
	HostRules []HostRule
	// QuorumVoters is 0 (off) or the number of voters, hosts 1..N.
	QuorumVoters int
	Grace        time.Duration

	HostID       uint8
	Interface    string
	DedicatedIP  netip.Prefix
	InitialState string
	MetricsAddr  string
	OnExit       string
	DrainTimeout time.Duration
}

// HostRule is this host's resolved setting for one rule.
type HostRule struct {
	Weight   uint32
	Priority int
	Health   *health.Check // nil: no check
}

// MACMode is the cluster's MAC mode.
type MACMode uint8

const (
	MACUnicast   MACMode = 1
	MACMulticast MACMode = 2
	MACIGMP      MACMode = 3
)

func (m MACMode) String() string {
	switch m {
	case MACUnicast:
		return "unicast"
	case MACMulticast:
		return "multicast"
	case MACIGMP:
		return "igmp"
	}
	return fmt.Sprintf("macmode(%d)", uint8(m))
}

// Resolve validates the configuration (reading the key file) and returns it
// resolved. Every error names the offending key and value.
func (c *Config) Resolve() (*Resolved, error) {
	r := &Resolved{Raw: *c, Name: c.Cluster.Name}
	if c.Cluster.Name == "" || len(c.Cluster.Name) > 64 {
		return nil, cerr("cluster.name", c.Cluster.Name, "must be 1 to 64 characters")
	}
	if len(c.Cluster.VIPs) == 0 {
		return nil, cerr("cluster.vips", "", "at least one VIP is required")
	}
	if len(c.Cluster.VIPs) > filter.MaxVIPs {
		return nil, cerr("cluster.vips", "", "%d VIPs, at most %d", len(c.Cluster.VIPs), filter.MaxVIPs)
	}
	for i, s := range c.Cluster.VIPs {
		key := fmt.Sprintf("cluster.vips[%d]", i)
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, cerr(key, s, "not an IP address")
		}
		if !a.Is4() {
			return nil, cerr(key, s, "only IPv4 VIPs are supported")
		}
		if !a.IsGlobalUnicast() {
			return nil, cerr(key, s, "a VIP must be a unicast address")
		}
		for _, v := range r.VIPs {
			if v == a {
				return nil, cerr(key, s, "duplicate VIP")
			}
		}
		r.VIPs = append(r.VIPs, a)
	}
	switch c.Cluster.MACMode {
	case "unicast":
		r.MACMode = MACUnicast
	case "multicast":
		r.MACMode = MACMulticast
	case "igmp":
		r.MACMode = MACIGMP
	default:
		return nil, cerr("cluster.mac_mode", c.Cluster.MACMode, "must be unicast, multicast or igmp")
	}
	r.Period = time.Duration(c.Cluster.Heartbeat.Period)
	if r.Period < 10*time.Millisecond || r.Period > 10*time.Second {
		return nil, cerr("cluster.heartbeat.period", r.Period.String(), "must be between 10ms and 10s")
	}
	r.LossTolerance = c.Cluster.Heartbeat.LossTolerance
	if r.LossTolerance < 2 || r.LossTolerance > 100 {
		return nil, cerr("cluster.heartbeat.loss_tolerance", strconv.Itoa(r.LossTolerance), "must be between 2 and 100")
	}
	if c.Cluster.KeyFile == "" {
		return nil, cerr("cluster.key_file", "", "required: heartbeats and remote control are authenticated with this key")
	}
	key, err := os.ReadFile(c.Cluster.KeyFile)
	if err != nil {
		return nil, cerr("cluster.key_file", c.Cluster.KeyFile, "unreadable: %v", errors.Unwrap(err))
	}
	key = bytes.TrimSpace(key)
	if len(key) < MinKeyLen {
		return nil, cerr("cluster.key_file", c.Cluster.KeyFile, "key is %d bytes, at least %d required (e.g. head -c 32 /dev/urandom | base64)", len(key), MinKeyLen)
	}
	r.Key = key
	if c.Cluster.HashSeed == "" {
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte("nlb hash seed v1"))
		copy(r.Seed[:], mac.Sum(nil))
	} else {
		b, err := hex.DecodeString(strings.TrimPrefix(c.Cluster.HashSeed, "0x"))
		if err != nil || len(b) != len(r.Seed) {
			return nil, cerr("cluster.hash_seed", c.Cluster.HashSeed, "must be 32 hex digits (128 bits)")
		}
		copy(r.Seed[:], b)
	}
	if c.Cluster.RemoteControl.Enabled {
		if c.Cluster.RemoteControl.Port == 0 {
			return nil, cerr("cluster.remote_control.port", "0", "must be 1..65535")
		}
		r.RemotePort = c.Cluster.RemoteControl.Port
	}
	if q := c.Cluster.QuorumVoters; q < 0 || q > filter.MaxHostID || q == 1 || q == 2 {
		return nil, cerr("cluster.quorum_voters", strconv.Itoa(q), "must be 0 (off) or 3..%d: with 1 or 2 voters one failure stops the cluster", filter.MaxHostID)
	}
	r.QuorumVoters = c.Cluster.QuorumVoters
	r.Grace = time.Duration(c.Cluster.Grace)
	if r.Grace < 0 || r.Grace > time.Hour {
		return nil, cerr("cluster.grace", r.Grace.String(), "must be between 0s and 1h")
	}
	if err := r.resolveRules(c); err != nil {
		return nil, err
	}
	if err := r.resolveHost(c); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Resolved) resolveRules(c *Config) error {
	if len(c.Cluster.PortRules) > filter.MaxRules {
		return cerr("cluster.port_rules", "", "%d rules, at most %d", len(c.Cluster.PortRules), filter.MaxRules)
	}
	type named struct {
		rule filter.PortRule
		name string
	}
	var rules []named
	for i, pr := range c.Cluster.PortRules {
		key := fmt.Sprintf("cluster.port_rules[%d]", i)
		var rule filter.PortRule
		switch pr.VIP {
		case "", "all":
		default:
			a, err := netip.ParseAddr(pr.VIP)
			if err != nil {
				return cerr(key+".vip", pr.VIP, "not an IP address or \"all\"")
			}
			found := false
			for _, v := range r.VIPs {
				found = found || v == a
			}
			if !found {
				return cerr(key+".vip", pr.VIP, "not one of cluster.vips")
			}
			rule.VIP = a
		}
		lo, hi, err := parsePorts(pr.Ports)
		if err != nil {
			return cerr(key+".ports", pr.Ports, "%v", err)
		}
		rule.StartPort, rule.EndPort = lo, hi
		switch pr.Protocol {
		case "tcp":
			rule.Protocol = filter.ProtoTCP
		case "udp":
			rule.Protocol = filter.ProtoUDP
		case "both", "":
			rule.Protocol = filter.ProtoBoth
		default:
			return cerr(key+".protocol", pr.Protocol, "must be tcp, udp or both")
		}
		switch pr.Mode {
		case "multiple", "":
			rule.Mode = filter.ModeMultiple
		case "single":
			rule.Mode = filter.ModeSingle
		case "disabled":
			rule.Mode = filter.ModeDisabled
		default:
			return cerr(key+".mode", pr.Mode, "must be multiple, single or disabled")
		}
		switch pr.Affinity {
		case "none":
			rule.Affinity = filter.AffinityNone
		case "single", "":
			rule.Affinity = filter.AffinitySingle // NLB's default
		case "network":
			rule.Affinity = filter.AffinityNetwork
		default:
			return cerr(key+".affinity", pr.Affinity, "must be none, single or network")
		}
		if r.RemotePort != 0 && rule.Protocol&filter.ProtoUDP != 0 &&
			r.RemotePort >= rule.StartPort && r.RemotePort <= rule.EndPort && rule.StartPort == rule.EndPort {
			return cerr(key+".ports", pr.Ports, "UDP port %d is the remote-control port", r.RemotePort)
		}
		name := pr.Name
		if name == "" {
			name = rule.String()
		}
		for j, o := range rules {
			if o.name == name {
				return cerr(key+".name", name, "duplicate rule name (rule %d)", j)
			}
			if filter.Overlap(o.rule, rule) {
				return cerr(key+".ports", pr.Ports, "overlaps rule %q (same VIP, ports and protocol)", o.name)
			}
		}
		rules = append(rules, named{rule, name})
	}
	// Canonical order; names travel with their rules.
	sorted := make([]filter.PortRule, len(rules))
	for i, n := range rules {
		sorted[i] = n.rule
	}
	filter.SortRules(sorted)
	for _, s := range sorted {
		for _, n := range rules {
			if n.rule == s {
				r.Rules = append(r.Rules, s)
				r.RuleNames = append(r.RuleNames, n.name)
				break
			}
		}
	}
	return nil
}

func parsePorts(s string) (uint16, uint16, error) {
	if s == "" {
		return 0, 0, errors.New("required: a port or range, e.g. 80 or 8000-8100")
	}
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if err != nil {
		return 0, 0, errors.New("not a port number (0-65535)")
	}
	b := a
	if isRange {
		if b, err = strconv.ParseUint(strings.TrimSpace(hi), 10, 16); err != nil {
			return 0, 0, errors.New("range end is not a port number (0-65535)")
		}
	}
	if a > b {
		return 0, 0, errors.New("range start is greater than its end")
	}
	return uint16(a), uint16(b), nil
}

func (r *Resolved) resolveHost(c *Config) error {
	h := c.Host
	if h.ID < 1 || h.ID > filter.MaxHostID {
		return cerr("host.id", strconv.Itoa(h.ID), "must be 1..%d", filter.MaxHostID)
	}
	r.HostID = uint8(h.ID)
	if h.Interface == "" || len(h.Interface) > 15 || strings.ContainsAny(h.Interface, "/ \t") {
		return cerr("host.interface", h.Interface, "must be an interface name (1-15 characters)")
	}
	r.Interface = h.Interface
	p, err := netip.ParsePrefix(h.DedicatedIP)
	if err != nil || !p.Addr().Is4() {
		return cerr("host.dedicated_ip", h.DedicatedIP, "must be an IPv4 address with prefix length, e.g. 198.18.1.1/24")
	}
	for _, v := range r.VIPs {
		if v == p.Addr() {
			return cerr("host.dedicated_ip", h.DedicatedIP, "is a VIP; the dedicated IP must be the host's own")
		}
	}
	r.DedicatedIP = p
	switch h.InitialState {
	case "started", "stopped", "suspended":
		r.InitialState = h.InitialState
	default:
		return cerr("host.initial_state", h.InitialState, "must be started, stopped or suspended")
	}
	if h.MetricsAddress != "" {
		if _, err := netip.ParseAddrPort(h.MetricsAddress); err != nil {
			return cerr("host.metrics_address", h.MetricsAddress, "must be IP:port, e.g. 127.0.0.1:9425")
		}
	}
	r.MetricsAddr = h.MetricsAddress
	switch h.OnExit {
	case "drainstop", "stop", "keep":
		r.OnExit = h.OnExit
	default:
		return cerr("host.on_exit", h.OnExit, "must be drainstop, stop or keep")
	}
	r.DrainTimeout = time.Duration(h.DrainTimeout)
	if r.DrainTimeout < 0 {
		return cerr("host.drain_timeout", r.DrainTimeout.String(), "must not be negative")
	}
	known := map[string]int{}
	for i, n := range r.RuleNames {
		known[n] = i
	}
	for name := range h.Rules {
		if _, ok := known[name]; !ok {
			return cerr("host.rules", name, "no port rule has this name (rules: %s)", strings.Join(r.RuleNames, ", "))
		}
	}
	r.HostRules = make([]HostRule, len(r.Rules))
	for i, name := range r.RuleNames {
		hr := HostRule{Weight: EqualWeight, Priority: h.ID}
		set := h.Rules[name]
		key := "host.rules." + name
		switch set.Weight {
		case "", "equal":
		default:
			w, err := strconv.ParseUint(set.Weight, 10, 8)
			if err != nil || w > 100 {
				return cerr(key+".weight", set.Weight, "must be 0..100 or equal")
			}
			hr.Weight = uint32(w)
		}
		if set.Priority != 0 {
			if set.Priority < 1 || set.Priority > filter.MaxHostID {
				return cerr(key+".priority", strconv.Itoa(set.Priority), "must be 1..%d", filter.MaxHostID)
			}
			if r.Rules[i].Mode != filter.ModeSingle {
				return cerr(key+".priority", strconv.Itoa(set.Priority), "only single-host rules have a handling priority")
			}
			hr.Priority = set.Priority
		}
		if set.Health != nil {
			c, err := resolveHealth(key+".health", name, set.Health)
			if err != nil {
				return err
			}
			hr.Health = c
		}
		r.HostRules[i] = hr
	}
	return nil
}

// RuleIndex finds a rule by name ("web", "all:80/tcp") or by port ("80",
// "198.18.0.10:80"), as nlbctl accepts them.
func (r *Resolved) RuleIndex(ref string) (int, error) {
	for i, n := range r.RuleNames {
		if n == ref {
			return i, nil
		}
	}
	vip, portStr, hasVIP := strings.Cut(ref, ":")
	if !hasVIP {
		portStr, vip = vip, ""
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return -1, fmt.Errorf("no port rule %q", ref)
	}
	for i, rule := range r.Rules {
		if vip != "" && vip != "all" && (rule.AllVIPs() || rule.VIP.String() != vip) {
			continue
		}
		if uint16(port) >= rule.StartPort && uint16(port) <= rule.EndPort {
			return i, nil
		}
	}
	return -1, fmt.Errorf("no port rule covers %q", ref)
}

func resolveHealth(key, rule string, h *HealthConfig) (*health.Check, error) {
	c := &health.Check{Rule: rule, Kind: health.Kind(h.Type), Expect: h.Expect,
		Interval: time.Duration(h.Interval), Timeout: time.Duration(h.Timeout), Rise: h.Rise, Fall: h.Fall}
	if c.Interval == 0 {
		c.Interval = DefaultHealthInterval
	}
	if c.Timeout == 0 {
		c.Timeout = min(DefaultHealthTimeout, c.Interval)
	}
	if c.Rise == 0 {
		c.Rise = DefaultHealthRise
	}
	if c.Fall == 0 {
		c.Fall = DefaultHealthFall
	}
	only := func(field string, set bool) error {
		if set {
			return cerr(key+"."+field, "", "does not apply to a %s check", h.Type)
		}
		return nil
	}
	var err error
	switch c.Kind {
	case health.KindTCP:
		if _, _, e := net.SplitHostPort(h.Address); e != nil || h.Address == "" {
			return nil, cerr(key+".address", h.Address, "a tcp check needs host:port, e.g. 127.0.0.1:80")
		}
		c.Target = h.Address
		err = errors.Join(only("url", h.URL != ""), only("command", len(h.Command) > 0), only("expect", h.Expect != 0))
	case health.KindHTTP, health.KindHTTPS:
		u, e := url.Parse(h.URL)
		if e != nil || u.Scheme != h.Type || u.Host == "" {
			return nil, cerr(key+".url", h.URL, "a %s check needs a %s:// URL, e.g. %s://127.0.0.1/healthz", h.Type, h.Type, h.Type)
		}
		if h.Expect != 0 && (h.Expect < 100 || h.Expect > 599) {
			return nil, cerr(key+".expect", strconv.Itoa(h.Expect), "must be an HTTP status (100–599)")
		}
		c.Target = h.URL
		err = errors.Join(only("address", h.Address != ""), only("command", len(h.Command) > 0))
	case health.KindExec:
		if len(h.Command) == 0 || h.Command[0] == "" {
			return nil, cerr(key+".command", "", "an exec check needs a command, e.g. [/usr/local/bin/check, web]")
		}
		c.Command = h.Command
		err = errors.Join(only("address", h.Address != ""), only("url", h.URL != ""), only("expect", h.Expect != 0))
	default:
		return nil, cerr(key+".type", h.Type, "must be tcp, http, https or exec")
	}
	if err != nil {
		return nil, err
	}
	switch {
	case c.Interval < 100*time.Millisecond:
		return nil, cerr(key+".interval", c.Interval.String(), "must be at least 100ms")
	case c.Timeout <= 0 || c.Timeout > c.Interval:
		return nil, cerr(key+".timeout", c.Timeout.String(), "must be positive and at most the interval (%v)", c.Interval)
	case c.Rise < 1 || c.Rise > 100:
		return nil, cerr(key+".rise", strconv.Itoa(c.Rise), "must be 1..100")
	case c.Fall < 1 || c.Fall > 100:
		return nil, cerr(key+".fall", strconv.Itoa(c.Fall), "must be 1..100")
	}
	return c, nil
}

// HealthChecks returns the configured checks, in rule order.
func (r *Resolved) HealthChecks() []*health.Check {
	var out []*health.Check
	for _, hr := range r.HostRules {
		if hr.Health != nil {
			out = append(out, hr.Health)
		}
	}
	return out
}
