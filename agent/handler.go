package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"reflect"
	"sort"
	"time"

	"github.com/nlbproject/nlb/config"

	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/health"
	"github.com/nlbproject/nlb/internal/version"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/remote"
)

var _ remote.Handler = (*Agent)(nil)

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

func (a *Agent) ruleName(cfg *config.Resolved, t int) string {
	if t == filter.DefaultRule {
		return "default"
	}
	return cfg.RuleNames[t]
}

// Handle implements remote.Handler. Commands that change something are
// recorded in the event history with their source and outcome, and, with
// host.retain_state, the operator state they leave is written to disk.
func (a *Agent) Handle(ctx context.Context, cmd remote.Command, args remote.Args) (any, error) {
	res, err := a.handle(ctx, cmd, args)
	if !cmd.Changes() || cmd == remote.CmdReload {
		return res, err // reload records its own event
	}
	a.mu.Lock()
	cfg, node := a.cfg, a.node
	a.mu.Unlock()
	detail := cmd.String()
	if args.Rule != "" {
		detail += " " + args.Rule
	}
	if err != nil {
		detail += ": failed: " + err.Error()
	}
	src := ""
	if s, ok := remote.SourceFrom(ctx); ok {
		src = s.String()
	}
	a.event("command", cfg.HostID, detail, src)
	if err == nil && node != nil && cfg.RetainState {
		r := retainedFrom(node.Status(), cfg.RuleNames)
		r.By = detail + " from " + cmp.Or(src, "the agent")
		if werr := writeRetained(a.opts.Layout.RetainedFile(cfg.Interface), r); werr != nil {
			a.log.Error("host.retain_state: could not record the operator state", "error", werr)
			return res, fmt.Errorf("done, but not retained: %w", werr)
		}
	}
	return res, err
}

func (a *Agent) handle(ctx context.Context, cmd remote.Command, args remote.Args) (any, error) {
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
		q := remote.QueryResult{Host: cfg.HostID, State: st.State.String(), Why: st.Why, Members: []uint8{},
			Heard: members(st.Heard), Convergences: st.Convergences,
			LastConvergenceMS: float64(st.LastConvergence.Microseconds()) / 1000,
			Owned:             map[string]int{}, LeaseValid: fst.LeaseValid, Incarnation: st.Incarnation,
			Uptime: time.Since(a.started).Round(time.Second).String(), Version: version.String(),
			PriorityConflicts: []remote.PriorityConflict{}}
		for _, pc := range st.PriorityConflicts {
			q.PriorityConflicts = append(q.PriorityConflicts, remote.PriorityConflict{
				Rule: a.ruleName(cfg, pc.Rule), Priority: pc.Priority, Hosts: pc.Hosts})
		}
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
		for id, d := range st.Silent {
			q.Silent = append(q.Silent, remote.SilentPeer{Host: id, SilentMS: float64(d.Milliseconds()),
				LeaseExpired: d >= cfg.LeaseFor(), Evicted: d >= cfg.DeadAfter()})
		}
		sort.Slice(q.Silent, func(i, j int) bool { return q.Silent[i].Host < q.Silent[j].Host })
		if hc != nil {
			q.Health = map[string]string{}
			for _, h := range hc.Snapshot() {
				q.Health[h.Rule] = healthWords(h)
			}
		}
		a.mu.Lock()
		sp := a.speaker
		a.mu.Unlock()
		if sp != nil {
			bs := sp.Status()
			q.BGP = &remote.BGPStatus{Announced: bs.Announced, Withdrawn: bs.Withdrawn, Peers: bs.Peers}
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
		res := remote.RuleResult{Op: cmd.String(), Rules: []string{}}
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
			if err != nil {
				return nil, fmt.Errorf("ip2mac: %q is not an IP address", args.VIP)
			}
			vip = v
		}
		return ip2mac(cfg, vip)
	case remote.CmdFilter:
		return a.filterFlow(cfg, node, &fst, args)
	case remote.CmdEvents:
		return a.events.since(args.Since, args.SinceTime, args.Limit), nil
	case remote.CmdPorts:
		return a.ports(cfg, node, &fst, args)
	}
	return nil, fmt.Errorf("command %v is not implemented", cmd)
}

func ip2mac(cfg *config.Resolved, vip netip.Addr) (*remote.IP2MACResult, error) {
	u, err := macmode.UnicastMAC(vip)
	if err != nil {
		return nil, err
	}
	m, _ := macmode.MulticastMAC(vip)
	i, _ := macmode.IGMPMAC(vip)
	g, _ := macmode.IGMPGroup(vip)
	r := &remote.IP2MACResult{VIP: vip.String(), Mode: string(cfg.MACMode), Unicast: u.String(),
		Multicast: m.String(), IGMP: i.String(), IGMPGroup: g.String()}
	switch cfg.MACMode {
	case macmode.Unicast:
		r.InUse = r.Unicast
		h, _ := macmode.MaskedMAC(vip, cfg.HostID)
		r.HostMAC = h.String()
	case macmode.Multicast:
		r.InUse = r.Multicast
	case macmode.IGMP:
		r.InUse = r.IGMP
	}
	return r, nil
}

func (a *Agent) filterFlow(cfg *config.Resolved, node *Node, fst *filter.State, args remote.Args) (*remote.FilterResult, error) {
	client, dst, err := filter.ParseFlow(args.Client, args.Dest)
	if err != nil {
		return nil, fmt.Errorf("filter: %w", err)
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
	r := &remote.FilterResult{Verdict: d.Verdict.String(), Reason: d.Reason.String(), Bucket: d.Bucket, Rule: "none"}
	if d.Rule >= 0 {
		r.Rule = a.ruleName(cfg, d.Rule)
		if e := node.Status().Epoch; e != nil && d.Bucket >= 0 && e.Tables[d.Rule] != nil {
			r.Owner = e.Tables[d.Rule][d.Bucket]
		}
	}
	return r, nil
}

func paramsOf(cfg *config.Resolved) *remote.Params {
	p := &remote.Params{Cluster: cfg.Name, MACMode: string(cfg.MACMode), Period: cfg.Period.String(),
		LossTolerance: cfg.LossTolerance, RemotePort: cfg.RemotePort, Quorum: map[bool]string{true: "majority", false: "off"}[cfg.Quorum], QuorumVoters: cfg.QuorumVoters,
		Grace: cfg.Grace.String(), Interface: cfg.Interface, DedicatedIP: cfg.DedicatedIP.String(),
		OnExit: string(cfg.OnExit), DrainTimeout: cfg.DrainTimeout.String(), Rules: []remote.ParamsRule{}}
	d := cfg.Digest()
	p.Digest = fmt.Sprintf("%x", d[:8])
	for _, v := range cfg.VIPs {
		p.VIPs = append(p.VIPs, v.String())
	}
	for i, r := range cfg.Rules {
		p.Rules = append(p.Rules, remote.ParamsRule{Name: cfg.RuleNames[i], Spec: r.String(), Mode: r.Mode.String(),
			Affinity: r.Affinity.String(), Weight: cfg.HostRules[i].Weight, Priority: cfg.HostRules[i].Priority})
	}
	return p
}

// Reload re-reads the configuration file. Only this host's per-rule
// weights and priorities can change while running; any other change is
// refused with the name of what changed, and the running configuration
// stays.
func (a *Agent) Reload(ctx context.Context) (*remote.Params, error) {
	a.mu.Lock()
	cur, node, srv := a.cfg, a.node, a.srv
	a.mu.Unlock()
	a.notify(fmt.Sprintf("RELOADING=1\nMONOTONIC_USEC=%d", monotonicUsec()))
	defer func() {
		st := "reloading"
		if node != nil {
			st = statusLine(node.Status())
		}
		a.notify("READY=1\nSTATUS=" + st)
	}()
	src := "SIGHUP"
	if s, ok := remote.SourceFrom(ctx); ok {
		src = s.String()
	}
	next, err := config.Load(a.opts.ConfigPath)
	if err != nil {
		err = fmt.Errorf("reload refused, running configuration kept: %w", err)
		a.event("reload", cur.HostID, err.Error(), src)
		return nil, err
	}
	if what := restartNeeded(cur, next); what != "" {
		err := fmt.Errorf("reload refused, running configuration kept: %s changed, which needs a restart", what)
		a.event("reload", cur.HostID, err.Error(), src)
		return nil, err
	}
	if node != nil {
		if err := node.Do(ctx, convergence.Command{Op: convergence.OpSetSettings, Settings: next.Settings()}); err != nil {
			return nil, err
		}
		if !cur.Keys.Equal(&next.Keys) {
			// A key rotation step: sign with the new current key, accept
			// the keyring's others (docs/operations.md).
			node.SetKeys(next.Keys.Heartbeat())
			a.log.Info("keys changed", "heartbeat_keys", len(next.Keys.Heartbeat()))
		}
	}
	if srv != nil && !cur.Keys.Equal(&next.Keys) {
		srv.SetKeys(next.Keys.Remote())
	}
	a.mu.Lock()
	a.cfg = next
	a.mu.Unlock()
	a.log.Info("configuration reloaded", "path", a.opts.ConfigPath)
	a.event("reload", next.HostID, "configuration reloaded from "+a.opts.ConfigPath, src)
	return paramsOf(next), nil
}

// restartNeeded names the first setting that differs between cur and next
// and cannot change while running, or returns "".
func restartNeeded(cur, next *config.Resolved) string {
	if cur.Digest() != next.Digest() {
		return "the cluster section"
	}
	for _, c := range []struct {
		name string
		a, b any
	}{
		{"host.id", cur.HostID, next.HostID},
		{"host.interface", cur.Interface, next.Interface},
		{"host.dedicated_ip", cur.DedicatedIP, next.DedicatedIP},
		{"host.dedicated_ip6", cur.DedicatedIP6, next.DedicatedIP6},
		{"host.metrics_address", cur.MetricsAddr, next.MetricsAddr},
		{"host.rules.*.health", cur.HealthChecks(), next.HealthChecks()},
		{"host.bgp", cur.BGP, next.BGP},
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
