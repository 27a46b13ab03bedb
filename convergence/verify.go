package convergence

import (
	"fmt"
	"math"
	"math/bits"

	"github.com/nlbproject/nlb/filter"
)

// verifyTables checks the tables of an epoch a leader announced against
// what this host can work out itself from the epoch's members and the
// settings they advertise in their own heartbeats:
//   - a bucket is owned by a member of the epoch, or (only when no
//     member takes the rule) by nobody;
//   - a multiple-host rule gives each member its weighted share of the
//     buckets, within one bucket, and leaves none unowned;
//   - a single-host rule gives every bucket to the best-priority member;
//   - a disabled rule has no table, and the default table is one
//     member's.
//
// A lying leader (it holds the cluster key, so it can sign anything) is
// limited to tables that pass these checks. Shares are checked only when
// this host has heard every member's settings; a check that fails because
// the leader has not heard a settings change yet passes once it has (the
// leader proposes again). It returns "" or what is wrong.
func (m *Machine) verifyTables(e *Epoch) string {
	settings, complete := m.memberSettings(e.Members)
	member := func(id uint8) bool { return id != 0 && id <= filter.MaxHostID && e.Members&(1<<(id-1)) != 0 }
	for i, r := range m.cfg.Rules {
		tab := e.Tables[i]
		if tab != nil && *tab == (filter.Table{}) {
			tab = nil // tables travel in chunks: no table arrives as an empty one
		}
		switch r.Mode {
		case filter.ModeDisabled:
			if tab != nil {
				return fmt.Sprintf("rule %d is disabled but has a table", i)
			}
			continue
		case filter.ModeMultiple:
			if tab == nil {
				tab = &filter.Table{} // no member takes it: every bucket unowned
			}
			counts := tab.Counts()
			for id, c := range counts {
				if c > 0 && id != 0 && !member(uint8(id)) {
					return fmt.Sprintf("rule %d gives %d buckets to host %d, not a member", i, c, id)
				}
			}
			if !complete {
				continue
			}
			var total uint64
			for _, s := range settings {
				if i < len(s) {
					total += uint64(s[i].Weight)
				}
			}
			if total == 0 {
				if counts[0] != filter.Buckets {
					return fmt.Sprintf("rule %d: no member takes it, yet buckets are owned", i)
				}
				continue
			}
			if counts[0] != 0 {
				return fmt.Sprintf("rule %d leaves %d buckets unowned", i, counts[0])
			}
			for id, s := range settings {
				share := float64(filter.Buckets) * float64(s[i].Weight) / float64(total)
				if math.Abs(float64(counts[id])-share) > 1 {
					return fmt.Sprintf("rule %d gives host %d %d buckets, its weight's share is %.1f", i, id, counts[id], share)
				}
			}
		case filter.ModeSingle:
			if tab != nil && !member(tab[0]) {
				return fmt.Sprintf("rule %d goes to host %d, not a member", i, tab[0])
			}
			if !complete {
				continue
			}
			want := ComputeTables(m.cfg.Rules[i:i+1], singleOnly(settings, i), nil)[0]
			if (want == nil) != (tab == nil) || want != nil && *want != *tab {
				return fmt.Sprintf("rule %d is not with its best-priority member", i)
			}
		}
	}
	// The default rule goes to the lowest member that is not draining
	// (the leader's view of who drains may be ahead of ours): it must be
	// with one member, whole.
	if def := e.Tables[filter.DefaultRule]; e.Members != 0 && (def == nil || !member(def[0]) || *def != *filter.Uniform(def[0])) {
		return "the default rule is not with one member"
	}
	return ""
}

// singleOnly returns each host's setting of rule i alone, for computing
// that one rule's table.
func singleOnly(settings map[uint8][]filter.RuleSetting, i int) map[uint8][]filter.RuleSetting {
	out := make(map[uint8][]filter.RuleSetting, len(settings))
	for id, s := range settings {
		if i < len(s) {
			out[id] = []filter.RuleSetting{s[i]}
		}
	}
	return out
}

// memberSettings is every member's rule settings as this host knows them
// (its own, and its peers' last admitted heartbeats); complete is false
// if a member's are unknown.
func (m *Machine) memberSettings(members uint64) (settings map[uint8][]filter.RuleSetting, complete bool) {
	n := len(m.cfg.Rules)
	settings, complete = map[uint8][]filter.RuleSetting{}, true
	for v := members; v != 0; v &= v - 1 {
		id := uint8(bits.TrailingZeros64(v) + 1)
		if id == m.cfg.HostID {
			settings[id] = ToSettings(m.effective(), n)
			continue
		}
		if p := m.peers[id]; p != nil && p.hb != nil && p.refused == "" {
			settings[id] = ToSettings(p.hb.Rules, n)
		} else {
			complete = false
		}
	}
	return settings, complete
}
