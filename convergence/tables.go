package convergence

import (
	"slices"

	"github.com/nlbproject/nlb/filter"
)

// Tables is one table per rule index, plus filter.DefaultRule. A nil entry
// means nobody owns the rule's buckets (disabled rule, or no rules).
type Tables [filter.MaxRules + 1]*filter.Table

// ComputeTables derives every rule's table for the live hosts (host ID →
// its settings, indexed like rules) from the previous tables (nil for a new
// cluster):
//   - multiple: Rebalance of the previous table by the hosts' weights;
//   - single: every bucket to the live host with the best (lowest)
//     priority, ties broken by lowest host ID; priority 0 means the host
//     is out of the selection (rule disabled or draining there);
//   - disabled: no table;
//   - DefaultRule: every bucket to the live host with the lowest ID.
func ComputeTables(rules []filter.PortRule, hosts map[uint8][]filter.RuleSetting, prev *Tables) *Tables {
	var out Tables
	if len(hosts) == 0 {
		return &out
	}
	for i, r := range rules {
		switch r.Mode {
		case filter.ModeMultiple:
			w := make(map[uint8]uint32, len(hosts))
			for id, s := range hosts {
				if i < len(s) {
					w[id] = s[i].Weight
				}
			}
			var p *filter.Table
			if prev != nil {
				p = prev[i]
			}
			out[i] = Rebalance(p, w)
		case filter.ModeSingle:
			best, bestPrio := uint8(0), 0
			for id, s := range hosts {
				if i >= len(s) {
					continue
				}
				pr := s[i].Priority
				if pr <= 0 {
					continue // out: disabled or draining on that host
				}
				if best == 0 || pr < bestPrio || pr == bestPrio && id < best {
					best, bestPrio = id, pr
				}
			}
			if best != 0 {
				out[i] = filter.Uniform(best)
			}
		}
	}
	out[filter.DefaultRule] = filter.Uniform(DefaultHost(hosts))
	return &out
}

// DefaultHost is the live host with the lowest ID (0 if none), which takes
// VIP traffic that matches no port rule, as in NLB.
func DefaultHost[V any](hosts map[uint8]V) uint8 {
	best := uint8(0)
	for id := range hosts {
		if best == 0 || id < best {
			best = id
		}
	}
	return best
}

// Owner returns the owner of bucket b of rule ri under these tables.
func (t *Tables) Owner(ri, b int) uint8 {
	if ri < 0 || ri >= len(t) || t[ri] == nil || b < 0 || b >= filter.Buckets {
		return 0
	}
	return t[ri][b]
}

// Marks returns host id's settled marks for every rule (owned where the
// tables name it).
func (t *Tables) Marks(id uint8) [filter.MaxRules + 1]*filter.Marks {
	var m [filter.MaxRules + 1]*filter.Marks
	for i, tab := range t {
		if tab != nil {
			m[i] = tab.MarksFor(id)
		}
	}
	return m
}

// PriorityConflict is a single-host rule to which two or more hosts give
// the same handling priority: the lowest ID among them takes it, which an
// operator did not choose (docs/config.md: priorities must be unique).
type PriorityConflict struct {
	Rule     int
	Priority int
	Hosts    []uint8 // ascending
}

// PriorityConflicts finds them among hosts' settings, by rule then
// priority.
func PriorityConflicts(rules []filter.PortRule, hosts map[uint8][]filter.RuleSetting) []PriorityConflict {
	var out []PriorityConflict
	for i, r := range rules {
		if r.Mode != filter.ModeSingle {
			continue
		}
		by := map[int][]uint8{}
		for id, s := range hosts {
			if i < len(s) && s[i].Priority > 0 {
				by[s[i].Priority] = append(by[s[i].Priority], id)
			}
		}
		prios := make([]int, 0, len(by))
		for p, ids := range by {
			if len(ids) > 1 {
				prios = append(prios, p)
			}
		}
		slices.Sort(prios)
		for _, p := range prios {
			ids := by[p]
			slices.Sort(ids)
			out = append(out, PriorityConflict{Rule: i, Priority: p, Hosts: ids})
		}
	}
	return out
}
