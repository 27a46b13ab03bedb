package agent

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"reflect"
	"sort"
	"time"

	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/health"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/remote"
)

var _ remote.Handler = (*Agent)(nil)

// QueryResult is one host's answer to query.
type QueryResult struct {
	Host  uint8  `json:"host"`
	State string `json:"state"`
	// Why is the reason of the last state change.
	Why         string  `json:"why,omitempty"`
	Epoch       uint64  `json:"epoch"`
	Members     []uint8 `json:"members"`
	DefaultHost uint8   `json:"default_host"`
	Heard       []uint8 `json:"heard"`
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

func members(v uint64) []uint8 {
	out := []uint8{}
	for ; v != 0; v &= v - 1 {
		out = append(out, uint8(bits.TrailingZeros64(v)+1))
	}
	return out
}

// Identity implements remote.Handler.
func (a *Agent) Identity() (uint8, string, []uint8) {
	a.mu.Lock()
	node, id := a.node, a.cfg.HostID
	a.mu.Unlock()
	if node == nil {
		return id, "starting", []uint8{id}
	}
	st := node.Status()
	return id, st.State.String(), members(st.Heard)
}

func (a *Agent) ruleName(cfg *Resolved, t int) string {
	if t == filter.DefaultRule {
		return "default"
	}
	return cfg.RuleNames[t]
}

// Handle implements remote.Handler.
func (a *Agent) Handle(ctx context.Context, cmd remote.Command, args remote.Args) (any, error) {
	a.mu.Lock()
	cfg, node, fst, srv, hc := a.cfg, a.node, a.fstate, a.srv, a.health
	a.mu.Unlock()
	if node == nil {
		return nil, errors.New("the agent is starting")
	}
	op := func(o convergence.Op, rule int) error {
		return node.Do(ctx, convergence.Command{Op: o, Rule: rule})
	}
	switch cmd {
	case remote.CmdQuery:
		st := node.Status()
		q := QueryResult{Host: cfg.HostID, State: st.State.String(), Why: st.Why, Members: []uint8{},
			Heard: members(st.Heard), Convergences: st.Convergences,
			LastConvergenceMS: float64(st.LastConvergence.Microseconds()) / 1000,
			Owned:             map[string]int{}, LeaseValid: fst.LeaseValid, Incarnation: a.inc,
			Uptime: time.Since(a.started).Round(time.Second).String()}
		if st.Epoch != nil {
			q.Epoch, q.Members = st.Epoch.Num, members(st.Epoch.Members)
			if len(q.Members) > 0 {
				q.DefaultHost = q.Members[0]
			}
		}
		for t := range cfg.Rules {
			q.Owned[a.ruleName(cfg, t)] = ownedBuckets(&fst, t)
		}
		q.Owned["default"] = ownedBuckets(&fst, filter.DefaultRule)
		q.Accepted, q.Dropped = a.packetTotals()
		mc := convergence.Config{Period: cfg.Period, LossTolerance: cfg.LossTolerance}
		for id, d := range st.Silent {
			q.Silent = append(q.Silent, SilentPeer{Host: id, SilentMS: float64(d.Milliseconds()),
				LeaseExpired: d >= mc.LeaseFor(), Evicted: d >= mc.DeadAfter()})
		}
		sort.Slice(q.Silent, func(i, j int) bool { return q.Silent[i].Host < q.Silent[j].Host })
		if hc != nil {
			q.Health = map[string]string{}
			for _, h := range hc.Snapshot() {
				q.Health[h.Rule] = healthWords(h)
			}
		}
		q.RemoteRefused = map[string]uint64{}
		if srv != nil {
			for r, n := range srv.Guard().Counts() {
				if r != int(remote.RefusedNone) {
					q.RemoteRefused[remote.Refusal(r).String()] = n
				}
			}
		}
		return q, nil
	case remote.CmdStart:
		return nil, op(convergence.OpStart, 0)
	case remote.CmdStop:
		return nil, op(convergence.OpStop, 0)
	case remote.CmdDrainStop:
		return nil, op(convergence.OpDrainStop, 0)
	case remote.CmdSuspend:
		return nil, op(convergence.OpSuspend, 0)
	case remote.CmdResume:
		return nil, op(convergence.OpResume, 0)
	case remote.CmdEnable, remote.CmdDisable, remote.CmdDrain:
		o := map[remote.Command]convergence.Op{remote.CmdEnable: convergence.OpEnableRule,
			remote.CmdDisable: convergence.OpDisableRule, remote.CmdDrain: convergence.OpDrainRule}[cmd]
		res := RuleResult{Op: cmd.String(), Rules: []string{}}
		idx := -1
		if args.Rule != "all" {
			var err error
			if idx, err = cfg.RuleIndex(args.Rule); err != nil {
				return nil, err
			}
			res.Rules = append(res.Rules, cfg.RuleNames[idx])
		} else {
			res.Rules = append(res.Rules, cfg.RuleNames...)
		}
		return res, op(o, idx)
	case remote.CmdParams:
		return paramsOf(cfg), nil
	case remote.CmdReload:
		return a.Reload(ctx)
	case remote.CmdIP2MAC:
		vip := cfg.VIPs[0]
		if args.VIP != "" {
			v, err := netip.ParseAddr(args.VIP)
			if err != nil || !v.Is4() {
				return nil, fmt.Errorf("ip2mac: %q is not an IPv4 address", args.VIP)
			}
			vip = v
		}
		return ip2mac(cfg, vip)
	case remote.CmdFilter:
		return a.filterFlow(cfg, node, &fst, args)
	}
	return nil, fmt.Errorf("command %v is not implemented", cmd)
}

func ip2mac(cfg *Resolved, vip netip.Addr) (*IP2MACResult, error) {
	u, err := macmode.UnicastMAC(vip)
	if err != nil {
		return nil, err
	}
	m, _ := macmode.MulticastMAC(vip)
	i, _ := macmode.IGMPMAC(vip)
	g, _ := macmode.IGMPGroup(vip)
	r := &IP2MACResult{VIP: vip.String(), Mode: cfg.MACMode.String(), Unicast: u.String(),
		Multicast: m.String(), IGMP: i.String(), IGMPGroup: g.String()}
	switch cfg.MACMode {
	case MACUnicast:
		r.InUse = r.Unicast
		h, _ := macmode.MaskedMAC(vip, cfg.HostID)
		r.HostMAC = h.String()
	case MACMulticast:
		r.InUse = r.Multicast
	case MACIGMP:
		r.InUse = r.IGMP
	}
	return r, nil
}

func (a *Agent) filterFlow(cfg *Resolved, node *Node, fst *filter.State, args remote.Args) (*FilterResult, error) {
	client, err := netip.ParseAddrPort(args.Client)
	if err != nil || !client.Addr().Is4() {
		return nil, fmt.Errorf("filter: client %q: want IPv4:port", args.Client)
	}
	dst, err := netip.ParseAddrPort(args.Dest)
	if err != nil || !dst.Addr().Is4() {
		return nil, fmt.Errorf("filter: destination %q: want VIP:port", args.Dest)
	}
	p := &filter.Packet{Src: client.Addr(), Dst: dst.Addr(), SPort: client.Port(), DPort: dst.Port()}
	switch args.Proto {
	case "tcp", "":
		p.Proto, p.TCPFlags = 6, 0x02 // a SYN: who takes a new connection
	case "udp":
		p.Proto = 17
	default:
		return nil, fmt.Errorf("filter: protocol %q: want tcp or udp", args.Proto)
	}
	d := filter.Decide(p.Frame(), fst, nil)
	r := &FilterResult{Verdict: d.Verdict.String(), Reason: d.Reason.String(), Bucket: d.Bucket, Rule: "none"}
	if d.Rule >= 0 {
		r.Rule = a.ruleName(cfg, d.Rule)
		if e := node.Status().Epoch; e != nil && d.Bucket >= 0 && e.Tables[d.Rule] != nil {
			r.Owner = e.Tables[d.Rule][d.Bucket]
		}
	}
	return r, nil
}

// Params is the effective configuration params reports.
type Params struct {
	Cluster       string       `json:"cluster"`
	VIPs          []string     `json:"vips"`
	MACMode       string       `json:"mac_mode"`
	Period        string       `json:"heartbeat_period"`
	LossTolerance int          `json:"loss_tolerance"`
	RemotePort    uint16       `json:"remote_port"`
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

func paramsOf(cfg *Resolved) *Params {
	p := &Params{Cluster: cfg.Name, MACMode: cfg.MACMode.String(), Period: cfg.Period.String(),
		LossTolerance: cfg.LossTolerance, RemotePort: cfg.RemotePort, QuorumVoters: cfg.QuorumVoters,
		Grace: cfg.Grace.String(), Interface: cfg.Interface, DedicatedIP: cfg.DedicatedIP.String(),
		OnExit: cfg.OnExit, DrainTimeout: cfg.DrainTimeout.String(), Rules: []ParamsRule{}}
	d := cfg.Digest()
	p.Digest = fmt.Sprintf("%x", d[:8])
	for _, v := range cfg.VIPs {
		p.VIPs = append(p.VIPs, v.String())
	}
	for i, r := range cfg.Rules {
		p.Rules = append(p.Rules, ParamsRule{Name: cfg.RuleNames[i], Spec: r.String(), Mode: r.Mode.String(),
			Affinity: r.Affinity.String(), Weight: cfg.HostRules[i].Weight, Priority: cfg.HostRules[i].Priority})
	}
	return p
}

// Reload re-reads the configuration file. Only this host's per-rule
// weights and priorities can change while running; any other change is
// refused with the name of what changed, and the running configuration
// stays.
func (a *Agent) Reload(ctx context.Context) (*Params, error) {
	a.mu.Lock()
	cur, node := a.cfg, a.node
	a.mu.Unlock()
	next, err := LoadConfig(a.opts.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("reload refused, running configuration kept: %w", err)
	}
	if what := restartNeeded(cur, next); what != "" {
		return nil, fmt.Errorf("reload refused, running configuration kept: %s changed, which needs a restart", what)
	}
	if node != nil {
		if err := node.Do(ctx, convergence.Command{Op: convergence.OpSetSettings, Settings: next.Settings()}); err != nil {
			return nil, err
		}
	}
	a.mu.Lock()
	a.cfg = next
	a.mu.Unlock()
	a.log.Info("configuration reloaded", "path", a.opts.ConfigPath)
	return paramsOf(next), nil
}

// restartNeeded names the first setting that differs between cur and next
// and cannot change while running, or returns "".
func restartNeeded(cur, next *Resolved) string {
	if cur.Digest() != next.Digest() {
		return "the cluster section"
	}
	if string(cur.Key) != string(next.Key) {
		return "cluster.key_file's key"
	}
	for _, c := range []struct {
		name string
		a, b any
	}{
		{"host.id", cur.HostID, next.HostID},
		{"host.interface", cur.Interface, next.Interface},
		{"host.dedicated_ip", cur.DedicatedIP, next.DedicatedIP},
		{"host.metrics_address", cur.MetricsAddr, next.MetricsAddr},
		{"host.rules.*.health", cur.HealthChecks(), next.HealthChecks()},
	} {
		if !reflect.DeepEqual(c.a, c.b) {
			return c.name
		}
	}
	return ""
}

func healthWords(h health.Status) string {
	switch {
	case !h.Known:
		return "unknown"
	case h.Up:
		return "up"
	}
	return "down: " + h.Detail
}

// ownedBuckets counts, per table, the buckets this host takes new flows in.
func ownedBuckets(st *filter.State, t int) int {
	m := st.Marks[t]
	if m == nil {
		return 0
	}
	n := 0
	for _, k := range m {
		if k == filter.MarkOwned || k == filter.MarkDirty {
			n++
		}
	}
	return n
}
