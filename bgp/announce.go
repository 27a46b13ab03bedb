// Package bgp announces a cluster's VIPs to its routers with an embedded
// BGP speaker (github.com/osrg/gobgp), so that several clusters can sit
// behind routers that spread flows over them with ECMP
// (docs/scale-out.md). Which routes to announce is a pure function of the
// host's view (Announceable); the Speaker carries it out.
package bgp

import (
	"net/netip"

	"github.com/nlbproject/nlb/filter"
)

// View is what a host knows that decides its announcements.
type View struct {
	// Serving: the host is converged (or converged as default, or
	// converging: an epoch change does not stop it serving): it takes its
	// share of new flows. A draining, stopped, suspended, joining or
	// refused host withdraws its routes (the others go on announcing).
	Serving bool
	// LeaseValid: the data plane may take new flows (quorum held, the
	// agent alive).
	LeaseValid bool
	// Rules and Tables are the port rules and the agreed bucket tables
	// (index filter.DefaultRule: traffic matching no rule).
	Rules  []filter.PortRule
	Tables [filter.MaxRules + 1]*filter.Table
}

// Reason says why a host announces nothing.
type Reason string

const (
	Announcing    Reason = ""
	NotServing    Reason = "this host does not serve (draining, stopped, suspended, joining or refused)"
	LeaseExpired  Reason = "lease expired (no quorum, or the agent is stuck)"
	NobodyServing Reason = "no host serves the VIP's rules"
)

// Announceable returns the VIPs of announce that v lets this host
// announce: while it serves with a valid lease, each VIP that some host
// of the agreed tables serves (a rule for it, or for every VIP, or the
// default rule when no rule covers it, has a bucket with an owner). The
// reason is set when none is announced.
func Announceable(v View, announce []netip.Addr) ([]netip.Addr, Reason) {
	switch {
	case !v.Serving:
		return nil, NotServing
	case !v.LeaseValid:
		return nil, LeaseExpired
	}
	var out []netip.Addr
	for _, vip := range announce {
		if served(v, vip) {
			out = append(out, vip)
		}
	}
	if len(out) == 0 {
		return nil, NobodyServing
	}
	return out, Announcing
}

func served(v View, vip netip.Addr) bool {
	covered := false
	for i, r := range v.Rules {
		if r.VIP.IsValid() && r.VIP != vip {
			continue
		}
		covered = true
		if hasOwner(v.Tables[i]) {
			return true
		}
	}
	return !covered && hasOwner(v.Tables[filter.DefaultRule])
}

func hasOwner(t *filter.Table) bool {
	if t == nil {
		return false
	}
	for _, o := range t {
		if o != 0 {
			return true
		}
	}
	return false
}
