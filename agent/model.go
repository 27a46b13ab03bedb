package agent

import (
	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
)

// Settings returns this host's per-rule settings in rule order.
func (r *Resolved) Settings() []convergence.RuleSetting {
	s := make([]convergence.RuleSetting, len(r.HostRules))
	for i, hr := range r.HostRules {
		s[i] = convergence.RuleSetting{Weight: hr.Weight, Priority: hr.Priority}
	}
	return s
}

// ModelState is the filter state of host id under tables, with a valid
// lease: what its data plane holds once the cluster has converged.
func (r *Resolved) ModelState(id uint8, tables *convergence.Tables) *filter.State {
	return &filter.State{
		VIPs:       r.VIPs,
		Rules:      r.Rules,
		Seed:       r.Seed,
		RemotePort: r.RemotePort,
		Marks:      tables.Marks(id),
		LeaseValid: true,
	}
}
