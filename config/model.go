package config

import "github.com/nlbproject/nlb/filter"

// Settings returns this host's per-rule settings in rule order.
func (r *Resolved) Settings() []filter.RuleSetting {
	s := make([]filter.RuleSetting, len(r.HostRules))
	for i, hr := range r.HostRules {
		s[i] = hr.RuleSetting
	}
	return s
}

// ModelState is the filter state of a host whose marks are these (for
// example convergence.Tables.Marks of its ID), with a valid lease: what
// its data plane holds once the cluster has converged.
func (r *Resolved) ModelState(marks [filter.MaxRules + 1]*filter.Marks) *filter.State {
	return &filter.State{
		VIPs:       r.VIPs,
		Rules:      r.Rules,
		Seed:       r.Seed,
		RemotePort: r.RemotePort,
		Marks:      marks,
		LeaseValid: true,
	}
}
