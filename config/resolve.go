package config

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/health"
	"github.com/nlbproject/nlb/heartbeat"
	"github.com/nlbproject/nlb/macmode"
)

func isIPv4(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

// Resolved is a validated configuration in the types the rest of nlb uses.
type Resolved struct {
	Raw  Config
	Name string
	VIPs []netip.Addr // IPv4 first, then IPv6; VIPs[0] is the primary
	// Prefix6 is the IPv6 client prefix `network` affinity hashes.
	Prefix6 int
	MACMode macmode.Mode
	// Timing is the heartbeat period and loss tolerance (and the lease
	// and dead-after durations derived from them).
	heartbeat.Timing
	// Keys are the cluster's secrets by role; Key is the current cluster
	// (heartbeat) key.
	Keys       Keys
	Key        []byte
	Seed       filter.Seed
	RemotePort uint16 // 0 when remote control is off
	// Rules are in canonical order (filter.SortRules); RuleNames[i] and
	// HostRules[i] belong to Rules[i].
	Rules     []filter.PortRule
	RuleNames []string
	HostRules []HostRule
	// Quorum: majority (true, the default) or off. QuorumVoters is 0
	// (the voters are the last agreed members) or N: hosts 1..N.
	Quorum       bool
	QuorumVoters int
	Grace        time.Duration

	HostID       uint8
	Interface    string
	DedicatedIP  netip.Prefix
	DedicatedIP6 netip.Prefix // optional: not valid when not set
	InitialState InitialState
	MetricsAddr  string
	OnExit       ExitMode
	DrainTimeout time.Duration
	RetainState  bool
	// Notify is host.notify (nil: none).
	Notify *Notify
	// BGP is host.bgp (nil: no BGP speaker).
	BGP *BGP
}

// Notify is the resolved host.notify.
type Notify struct {
	Command []string
	Timeout time.Duration
	// Events is the set of kinds that run the command (nil: all).
	Events map[string]bool
}

// EventKinds are the kinds of events a host records (docs/observability.md).
var EventKinds = []string{"agent", "command", "reload", "health", "refusal", "state", "join", "leave",
	"evict", "damped", "refused", "duplicate-id", "quorum", "incarnation", "epoch", "drained",
	"priority-conflict", "tables-refused", "bgp"}

// HostRule is this host's resolved setting for one rule.
type HostRule struct {
	filter.RuleSetting
	Health *health.Check // nil: no check
}

// Resolve validates the configuration (reading the key file) and returns it
// resolved. Every error names the offending key and value.
func (c *Config) Resolve() (*Resolved, error) {
	r := &Resolved{Raw: *c, Name: c.Cluster.Name}
	var errs Errors
	fail := func(err error) { errs = append(errs, err) }
	if c.Cluster.Name == "" || len(c.Cluster.Name) > 64 {
		fail(cerr("cluster.name", c.Cluster.Name, "must be 1 to 64 characters"))
	}
	if len(c.Cluster.VIPs) == 0 {
		fail(cerr("cluster.vips", "", "at least one VIP is required"))
	}
	if len(c.Cluster.VIPs) > filter.MaxVIPs {
		fail(cerr("cluster.vips", "", "%d VIPs, at most %d", len(c.Cluster.VIPs), filter.MaxVIPs))
	}
vips:
	for i, s := range c.Cluster.VIPs {
		key := fmt.Sprintf("cluster.vips[%d]", i)
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil:
			fail(cerr(key, s, "not an IP address"))
			continue
		case a.Is4In6() || a.Zone() != "":
			fail(cerr(key, s, "write an IPv4 VIP as IPv4, an IPv6 VIP without a zone"))
			continue
		case !a.IsGlobalUnicast():
			fail(cerr(key, s, "a VIP must be a unicast address"))
			continue
		case i == 0 && a.Is6() && slices.ContainsFunc(c.Cluster.VIPs, isIPv4):
			// The primary VIP names the cluster on the wire (its MAC
			// addresses and heartbeats carry four bytes of it): the
			// first IPv4 VIP when there is one.
			fail(cerr(key, s, "with IPv4 VIPs, the first VIP (the primary) must be IPv4"))
			continue
		}
		for _, v := range r.VIPs {
			if v == a {
				fail(cerr(key, s, "duplicate VIP"))
				continue vips
			}
		}
		r.VIPs = append(r.VIPs, a)
	}
	// IPv4 VIPs first, each family in the written order: the data plane
	// indexes IPv6 VIPs by their place after the IPv4 ones.
	slices.SortStableFunc(r.VIPs, func(a, b netip.Addr) int { return cmp.Compare(a.BitLen(), b.BitLen()) })
	r.Prefix6 = c.Cluster.IPv6NetworkPrefix
	if r.Prefix6 == 0 {
		r.Prefix6 = filter.DefaultPrefix6
	}
	if r.Prefix6 < 1 || r.Prefix6 > 128 {
		fail(cerr("cluster.ipv6_network_prefix", strconv.Itoa(c.Cluster.IPv6NetworkPrefix), "must be between 1 and 128"))
	}
	switch m := macmode.Mode(c.Cluster.MACMode); m {
	case macmode.Unicast, macmode.Multicast, macmode.IGMP:
		r.MACMode = m
	default:
		fail(cerr("cluster.mac_mode", c.Cluster.MACMode, "must be unicast, multicast or igmp"))
	}
	r.Period = time.Duration(c.Cluster.Heartbeat.Period)
	if r.Period < 10*time.Millisecond || r.Period > 10*time.Second {
		fail(cerr("cluster.heartbeat.period", r.Period.String(), "must be between 10ms and 10s"))
	}
	r.LossTolerance = c.Cluster.Heartbeat.LossTolerance
	if r.LossTolerance < 2 || r.LossTolerance > 100 {
		fail(cerr("cluster.heartbeat.loss_tolerance", strconv.Itoa(r.LossTolerance), "must be between 2 and 100"))
	}
	if err := r.resolveKeys(c); err != nil {
		fail(err)
	}
	if c.Cluster.HashSeed == "" {
		copy(r.Seed[:], seedFromKey(r.Keys.Cluster))
	} else {
		b, err := hex.DecodeString(strings.TrimPrefix(c.Cluster.HashSeed, "0x"))
		if err != nil || len(b) != len(r.Seed) {
			fail(cerr("cluster.hash_seed", c.Cluster.HashSeed, "must be 32 hex digits (128 bits)"))
		}
		copy(r.Seed[:], b)
	}
	if c.Cluster.RemoteControl.Enabled {
		if c.Cluster.RemoteControl.Port == 0 {
			fail(cerr("cluster.remote_control.port", "0", "must be 1..65535"))
		}
		r.RemotePort = c.Cluster.RemoteControl.Port
	}
	switch c.Cluster.Quorum {
	case "", "majority":
		r.Quorum = true
	case "off":
	default:
		fail(cerr("cluster.quorum", c.Cluster.Quorum, "must be majority (the default) or off"))
	}
	if q := c.Cluster.QuorumVoters; q < 0 || q > filter.MaxHostID || q == 1 || q == 2 {
		fail(cerr("cluster.quorum_voters", strconv.Itoa(q), "must be 0 (the last agreed members) or 3..%d: with 1 or 2 fixed voters one failure stops the cluster", filter.MaxHostID))
	}
	if c.Cluster.QuorumVoters != 0 && !r.Quorum {
		fail(cerr("cluster.quorum_voters", strconv.Itoa(c.Cluster.QuorumVoters), "needs quorum: majority"))
	}
	r.QuorumVoters = c.Cluster.QuorumVoters
	r.Grace = time.Duration(c.Cluster.Grace)
	if r.Grace < 0 || r.Grace > time.Hour {
		fail(cerr("cluster.grace", r.Grace.String(), "must be between 0s and 1h"))
	}
	errs = append(errs, r.resolveRules(c)...)
	errs = append(errs, r.resolveHost(c)...)
	if len(errs) > 0 {
		return nil, errs
	}
	return r, nil
}

func (r *Resolved) resolveRules(c *Config) (errs Errors) {
	fail := func(err error) { errs = append(errs, err) }
	if len(c.Cluster.PortRules) > filter.MaxRules {
		return Errors{cerr("cluster.port_rules", "", "%d rules, at most %d", len(c.Cluster.PortRules), filter.MaxRules)}
	}
	type named struct {
		rule filter.PortRule
		name string
	}
	var rules []named
rules:
	for i, pr := range c.Cluster.PortRules {
		key := fmt.Sprintf("cluster.port_rules[%d]", i)
		var rule filter.PortRule
		switch pr.VIP {
		case "", "all":
		default:
			a, err := netip.ParseAddr(pr.VIP)
			if err != nil {
				fail(cerr(key+".vip", pr.VIP, "not an IP address or \"all\""))
				continue rules
			}
			found := false
			for _, v := range r.VIPs {
				found = found || v == a
			}
			if !found {
				fail(cerr(key+".vip", pr.VIP, "not one of cluster.vips"))
				continue rules
			}
			rule.VIP = a
		}
		lo, hi, err := parsePorts(pr.Ports)
		if err != nil {
			fail(cerr(key+".ports", pr.Ports, "%v", err))
			continue rules
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
			fail(cerr(key+".protocol", pr.Protocol, "must be tcp, udp or both"))
			continue rules
		}
		switch pr.Mode {
		case "multiple", "":
			rule.Mode = filter.ModeMultiple
		case "single":
			rule.Mode = filter.ModeSingle
		case "disabled":
			rule.Mode = filter.ModeDisabled
		default:
			fail(cerr(key+".mode", pr.Mode, "must be multiple, single or disabled"))
			continue rules
		}
		switch pr.Affinity {
		case "none":
			rule.Affinity = filter.AffinityNone
		case "single", "":
			rule.Affinity = filter.AffinitySingle // NLB's default
		case "network":
			rule.Affinity = filter.AffinityNetwork
		default:
			fail(cerr(key+".affinity", pr.Affinity, "must be none, single or network"))
			continue rules
		}
		if r.RemotePort != 0 && rule.Protocol&filter.ProtoUDP != 0 &&
			r.RemotePort >= rule.StartPort && r.RemotePort <= rule.EndPort && rule.StartPort == rule.EndPort {
			fail(cerr(key+".ports", pr.Ports, "UDP port %d is the remote-control port", r.RemotePort))
			continue rules
		}
		name := pr.Name
		if name == "" {
			name = rule.String()
		}
		for j, o := range rules {
			if o.name == name {
				fail(cerr(key+".name", name, "duplicate rule name (rule %d)", j))
				continue rules
			}
			if filter.Overlap(o.rule, rule) {
				fail(cerr(key+".ports", pr.Ports, "overlaps rule %q (same VIP, ports and protocol)", o.name))
				continue rules
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
	return errs
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

func (r *Resolved) resolveHost(c *Config) (errs Errors) {
	fail := func(err error) { errs = append(errs, err) }
	h := c.Host
	if h.ID < 1 || h.ID > filter.MaxHostID {
		fail(cerr("host.id", strconv.Itoa(h.ID), "must be 1..%d", filter.MaxHostID))
	}
	r.HostID = uint8(h.ID)
	if h.Interface == "" || len(h.Interface) > 15 || strings.ContainsAny(h.Interface, "/ \t") {
		fail(cerr("host.interface", h.Interface, "must be an interface name (1-15 characters)"))
	}
	r.Interface = h.Interface
	p, err := netip.ParsePrefix(h.DedicatedIP)
	if err != nil || !p.Addr().Is4() {
		fail(cerr("host.dedicated_ip", h.DedicatedIP, "must be an IPv4 address with prefix length, e.g. 198.18.1.1/24"))
	}
	for _, v := range r.VIPs {
		if err == nil && v == p.Addr() {
			fail(cerr("host.dedicated_ip", h.DedicatedIP, "is a VIP; the dedicated IP must be the host's own"))
		}
	}
	r.DedicatedIP = p
	if h.DedicatedIP6 != "" {
		p6, err := netip.ParsePrefix(h.DedicatedIP6)
		switch {
		case err != nil || !p6.Addr().Is6() || p6.Addr().Is4In6() || !p6.Addr().IsGlobalUnicast():
			fail(cerr("host.dedicated_ip6", h.DedicatedIP6, "must be a global IPv6 address with prefix length, e.g. 2001:2::1/64"))
		case slices.Contains(r.VIPs, p6.Addr()):
			fail(cerr("host.dedicated_ip6", h.DedicatedIP6, "is a VIP; the dedicated IP must be the host's own"))
		default:
			r.DedicatedIP6 = p6
		}
	}
	switch s := InitialState(h.InitialState); s {
	case StartStarted, StartStopped, StartSuspended:
		r.InitialState = s
	default:
		fail(cerr("host.initial_state", h.InitialState, "must be started, stopped or suspended"))
	}
	if h.MetricsAddress != "" {
		if _, err := netip.ParseAddrPort(h.MetricsAddress); err != nil {
			fail(cerr("host.metrics_address", h.MetricsAddress, "must be IP:port, e.g. 127.0.0.1:9425"))
		}
	}
	r.MetricsAddr = h.MetricsAddress
	switch m := ExitMode(h.OnExit); m {
	case ExitDrainStop, ExitStop, ExitKeep:
		r.OnExit = m
	default:
		fail(cerr("host.on_exit", h.OnExit, "must be drainstop, stop or keep"))
	}
	r.DrainTimeout = time.Duration(h.DrainTimeout)
	if r.DrainTimeout < 0 {
		fail(cerr("host.drain_timeout", r.DrainTimeout.String(), "must not be negative"))
	}
	r.RetainState = h.RetainState
	r.resolveBGP(h.BGP, h.AllowReadableKeyFiles, fail)
	if n := h.Notify; n != nil {
		r.Notify = &Notify{Command: n.Command, Timeout: cmp.Or(time.Duration(n.Timeout), 10*time.Second)}
		switch {
		case len(n.Command) == 0 || n.Command[0] == "":
			fail(cerr("host.notify.command", "", "must name a program (a list: [program, args...])"))
		case !filepath.IsAbs(n.Command[0]):
			fail(cerr("host.notify.command", n.Command[0], "must be an absolute path (no shell, no PATH lookup)"))
		}
		if n.Timeout < 0 || time.Duration(n.Timeout) > time.Hour {
			fail(cerr("host.notify.timeout", time.Duration(n.Timeout).String(), "must be between 0 (default 10s) and 1h"))
		}
		for i, k := range n.Events {
			if !slices.Contains(EventKinds, k) {
				fail(cerr(fmt.Sprintf("host.notify.events[%d]", i), k, "unknown event kind%s; known: %s", didYouMean(k, EventKinds), strings.Join(EventKinds, ", ")))
				continue
			}
			if r.Notify.Events == nil {
				r.Notify.Events = map[string]bool{}
			}
			r.Notify.Events[k] = true
		}
	}
	known := map[string]int{}
	for i, n := range r.RuleNames {
		known[n] = i
	}
	for name := range h.Rules {
		if _, ok := known[name]; !ok {
			fail(cerr("host.rules", name, "no port rule has this name%s (rules: %s)", didYouMean(name, r.RuleNames), strings.Join(r.RuleNames, ", ")))
		}
	}
	r.HostRules = make([]HostRule, len(r.Rules))
	for i, name := range r.RuleNames {
		hr := HostRule{RuleSetting: filter.RuleSetting{Weight: EqualWeight, Priority: h.ID}}
		set := h.Rules[name]
		key := "host.rules." + name
		switch set.Weight {
		case "", "equal":
		default:
			w, err := strconv.ParseUint(set.Weight, 10, 8)
			if err != nil || w > 100 {
				fail(cerr(key+".weight", set.Weight, "must be 0..100 or equal"))
			}
			hr.Weight = uint32(w)
		}
		if set.Priority != 0 {
			if set.Priority < 1 || set.Priority > filter.MaxHostID {
				fail(cerr(key+".priority", strconv.Itoa(set.Priority), "must be 1..%d", filter.MaxHostID))
			}
			if r.Rules[i].Mode != filter.ModeSingle {
				fail(cerr(key+".priority", strconv.Itoa(set.Priority), "only single-host rules have a handling priority"))
			}
			hr.Priority = set.Priority
		}
		if set.Health != nil {
			c, err := resolveHealth(key+".health", name, set.Health)
			if err != nil {
				fail(err)
			}
			hr.Health = c
		}
		r.HostRules[i] = hr
	}
	return errs
}

// RuleIndex finds a rule by name ("web", "all:80/tcp") or by port ("80",
// "198.18.0.10:80"), as nlbctl accepts them.
func (r *Resolved) RuleIndex(ref string) (int, error) {
	for i, n := range r.RuleNames {
		if n == ref {
			return i, nil
		}
	}
	// "PORT", "VIP:PORT", "all:PORT" or "[IPv6 VIP]:PORT".
	i := strings.LastIndex(ref, ":")
	vip, portStr := "", ref
	if i >= 0 {
		vip, portStr = strings.Trim(ref[:i], "[]"), ref[i+1:]
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
