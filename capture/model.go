package capture

import (
	"slices"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
)

// Model is the filter model of a cluster: a configuration and its members
// with their rule settings, the tables as if those members had just
// formed the cluster (nlbctl filter --members, and what nlbctl capture
// expects when it has no captured tables).
type Model struct {
	IDs    []uint8
	states map[uint8]*filter.State
}

// HostDecision is one host's decision on a frame.
type HostDecision struct {
	ID uint8
	filter.Decision
}

// NewModel builds the model of members hosts (ID → rule settings).
func NewModel(r *config.Resolved, hosts map[uint8][]filter.RuleSetting) *Model {
	tables := convergence.ComputeTables(r.Rules, hosts, nil)
	return NewModelFrom(r, tables, hosts)
}

// NewModelFrom builds the model with given tables (captured ones).
func NewModelFrom(r *config.Resolved, tables *convergence.Tables, hosts map[uint8][]filter.RuleSetting) *Model {
	m := &Model{states: map[uint8]*filter.State{}}
	for id := range hosts {
		m.IDs = append(m.IDs, id)
		m.states[id] = r.ModelState(tables.Marks(id))
	}
	slices.Sort(m.IDs)
	return m
}

// Decide returns every host's decision on frame, in ID order.
func (m *Model) Decide(frame []byte) []HostDecision {
	out := make([]HostDecision, 0, len(m.IDs))
	for _, id := range m.IDs {
		out = append(out, HostDecision{ID: id, Decision: filter.Decide(frame, m.states[id], nil)})
	}
	return out
}

// Takers are the hosts that accept the frame (or pass it, for traffic the
// filter does not decide).
func Takers(ds []HostDecision) []uint8 {
	var out []uint8
	for _, d := range ds {
		if d.Verdict == filter.Accept || d.Verdict == filter.Pass {
			out = append(out, d.ID)
		}
	}
	return out
}
