package agent

import (
	"context"
	"time"

	"github.com/nlbproject/nlb/bgp"
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
	for {
		sp.Update(ctx, a.bgpView(node))
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
	v := bgp.View{Serving: st.State == convergence.StateConverged || st.State == convergence.StateDefault,
		LeaseValid: lease, Rules: cfg.Rules}
	if st.Epoch != nil {
		v.Tables = st.Epoch.Tables
	}
	return v
}
