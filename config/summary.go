package config

import (
	"fmt"
	"io"
)

// PrintSummary writes a human summary of a validated configuration.
func PrintSummary(w io.Writer, r *Resolved) {
	fmt.Fprintf(w, "config ok: cluster %q, host %d on %s (%s)\n", r.Name, r.HostID, r.Interface, r.DedicatedIP)
	fmt.Fprintf(w, "  vips:        %v\n", r.VIPs)
	fmt.Fprintf(w, "  mac mode:    %s\n", r.MACMode)
	fmt.Fprintf(w, "  heartbeat:   every %s, dead after %d missed (%s)\n", r.Period, r.LossTolerance, r.DeadAfter())
	if r.RemotePort != 0 {
		fmt.Fprintf(w, "  remote:      udp/%d\n", r.RemotePort)
	} else {
		fmt.Fprintf(w, "  remote:      off\n")
	}
	switch {
	case !r.Quorum:
		fmt.Fprintf(w, "  quorum:      off (both sides of a partition serve, as NLB)\n")
	case r.QuorumVoters > 0:
		fmt.Fprintf(w, "  quorum:      majority of hosts 1..%d\n", r.QuorumVoters)
	default:
		fmt.Fprintf(w, "  quorum:      majority of the members last agreed (the minority side of a partition stops)\n")
	}
	fmt.Fprintf(w, "  state:       %s at start\n", r.InitialState)
	fmt.Fprintf(w, "  port rules:  %d\n", len(r.Rules))
	for i, rule := range r.Rules {
		hr := r.HostRules[i]
		fmt.Fprintf(w, "    %-12s %-24s %-9s affinity %-8s weight %-3d priority %d\n",
			r.RuleNames[i], rule, rule.Mode, rule.Affinity, hr.Weight, hr.Priority)
	}
}
