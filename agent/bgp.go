package agent

import (
	"context"
	"time"

	"github.com/nlbproject/nlb/bgp"
	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/convergence"
)

// runBGP runs the BGP speaker (host.bgp) until ctx ends: it announces the
// VIPs while this host serves them and withdraws them when it stops
// serving (a stop, a drain, a lost quorum), checking once a heartbeat
// period. Its failures are logged and recorded as events; they never end
// the agent or touch its serving.
func (a *Agent) runBGP(ctx context.Context, node *Node) {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	if cfg.BGP == nil {
		return
	}
	sp := bgp.NewSpeaker(cfg.BGP, a.log.Named("bgp"))
	sp.OnChange = func(what string) { a.event("bgp", cfg.HostID, what, "") }
	if err := sp.Start(ctx, cfg.DedicatedIP.Addr()); err != nil {
		a.log.Error("bgp speaker not started; the cluster serves on, without announcing", "error", err)
		a.event("bgp", cfg.HostID, "speaker not started: "+err.Error(), "")
		return
	}
	a.mu.Lock()
	a.speaker = sp
	a.mu.Unlock()
	defer sp.Stop()
	t := time.NewTicker(cfg.Period)
	defer t.Stop()
	var solicited time.Time
	for {
		v := a.bgpView(node)
		// Before the routes go out, and every 10 s while they are out,
		// each router on the segment is asked for its MAC from the next
		// hop: it learns the next hop's MAC (the cluster MAC) from the
		// request. A Linux router skips a next hop of an ECMP group whose
		// neighbour is unresolved, so without this the first packets of
		// flows hashed to this cluster would go to another cluster, and
		// their later packets, once it resolved, here: those flows break.
		want, why := bgp.Announceable(v, cfg.BGP.Announce)
		if len(want) > 0 && time.Since(solicited) >= 10*time.Second {
			a.solicitRouters(cfg)
			solicited = time.Now()
		}
		sp.Apply(ctx, want, why)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// bgpView is what the speaker decides on: this host's state, its lease
// and the agreed tables.
func (a *Agent) bgpView(node *Node) bgp.View {
	st := node.Status()
	a.mu.Lock()
	cfg, lease := a.cfg, a.fstate.LeaseValid
	a.mu.Unlock()
	// Converging is serving: the host keeps its buckets while an epoch
	// changes (a join, a leave elsewhere); withdrawing then would move
	// the router's flows away at every membership change.
	v := bgp.View{Serving: st.State == convergence.StateConverged || st.State == convergence.StateDefault ||
		st.State == convergence.StateConverging, LeaseValid: lease, Rules: cfg.Rules}
	if st.Epoch != nil {
		v.Tables = st.Epoch.Tables
	}
	return v
}

// solicitRouters asks each BGP peer on the dedicated IP's subnet for its
// MAC, from the next-hop VIP.
func (a *Agent) solicitRouters(cfg *config.Resolved) {
	a.mu.Lock()
	solicit := a.solicit
	a.mu.Unlock()
	if solicit == nil {
		return
	}
	for _, p := range cfg.BGP.Peers {
		if !cfg.DedicatedIP.Contains(p.Address) {
			continue
		}
		if err := solicit(p.Address, cfg.BGP.NextHop); err != nil {
			a.log.Warn("bgp: arp request to the router", "router", p.Address, "error", err)
		}
	}
}
