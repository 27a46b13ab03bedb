package convergence

import (
	"slices"
	"time"

	"github.com/nlbproject/nlb/filter"
)

// marksBeforeRenewal places im before the first lease renewal in out: a
// renewal lets the kernel take new flows in the buckets it holds owned,
// so buckets this step closes must be closed first (a restarted agent
// whose lease had run out would otherwise reopen, for an instant, buckets
// that other hosts own by now). Messages stay before it: what they
// advertise was installed by an earlier step.
func marksBeforeRenewal(out []Action, im InstallMarks) []Action {
	for i, a := range out {
		if l, ok := a.(Lease); ok && l.For > 0 {
			return slices.Insert(out, i, Action(im))
		}
	}
	return append(out, im)
}

func (m *Machine) setMark(t, b int, k filter.Mark) {
	if old := m.marks[t][b]; old != k {
		m.count[t][old]--
		m.count[t][k]++
		m.marks[t][b] = k
		m.dirtyMarks = true
		if k == filter.MarkRetained {
			m.retainedAt[t] = m.stepAt
		}
	}
}

// closeAll closes every bucket: held flows continue (retained), or, with
// hard, end (none).
func (m *Machine) closeAll(hard bool) {
	for _, t := range m.tables() {
		if m.count[t][filter.MarkNone] == filter.Buckets {
			continue
		}
		for b := range m.marks[t] {
			switch k := m.marks[t][b]; {
			case hard && k != filter.MarkNone:
				m.setMark(t, b, filter.MarkNone)
			case !hard && (k == filter.MarkOwned || k == filter.MarkDirty):
				m.setMark(t, b, filter.MarkRetained)
			}
		}
	}
}

// NeedsScan reports whether the next held-flow scan is of use: only
// retained buckets are released by a scan, so with none the agent skips
// the socket dump (its cost grows with the host's connections).
func (m *Machine) NeedsScan() bool { return m.retaining() != 0 }

func (m *Machine) retaining() uint64 {
	var r uint64
	for _, t := range m.tables() {
		if m.count[t][filter.MarkRetained] > 0 {
			r |= 1 << t
		}
	}
	return r
}

// barrier: every host we hear has closed what this epoch does not give it.
// Hosts we do not hear have been silent for DeadAfter: if their agent died,
// their lease (LeaseFor < DeadAfter) has already stopped their data plane
// taking new flows. A host cut off by a partition is not fenced: both
// sides serve, as in NLB (docs/architecture.md, "Partitions").
//
// Hosts that our peers hear but we do not (a link that fails one way) may
// still have buckets open: a peer that hears such a host must have passed
// its own barrier (phase open), which waited for them, before we open.
func (m *Machine) barrier(now time.Time) bool {
	view := m.view(now)
	var unheard uint64
	for _, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).Active() {
			unheard |= p.hb.View
		}
	}
	unheard &^= view
	for _, p := range m.peers {
		if !m.alive(now, p) {
			continue
		}
		if p.hb.View&unheard != 0 && (p.hb.Epoch != m.epoch.Num || p.hb.Phase < phaseOpen) {
			return false
		}
		s := State(p.hb.State)
		if s == StateStopped || s == StateSuspended || s == StateRefused {
			continue // no open buckets
		}
		if p.hb.Epoch != m.epoch.Num || p.hb.EpochDigest != m.epoch.Digest || p.hb.Phase < phaseClosed {
			return false
		}
	}
	return true
}

// open: phase two, take the buckets this epoch gives us (dirty until clean).
func (m *Machine) open(now time.Time) {
	for _, t := range m.tables() {
		tab := m.epoch.Tables[t]
		if tab == nil {
			continue
		}
		for b := range tab {
			if tab[b] == m.cfg.HostID && m.marks[t][b] != filter.MarkOwned && m.marks[t][b] != filter.MarkDirty {
				m.setMark(t, b, filter.MarkDirty)
			}
		}
	}
	m.phase = phaseOpen
}

// suspect returns the tables in which a host we saw go silent may still
// hold flows: one that was active (any table) or retaining, last heard less
// than DeadAfter + Grace ago. It may be alive with its agent dead, or cut
// off from us, still serving connections through its pinned data plane.
// This is first-hand knowledge; it travels in our heartbeats' Retaining
// bits so that hosts that never heard the silent host (joiners) know too.
// For DeadAfter + Grace after it starts, a machine suspects every table.
func (m *Machine) suspect(now time.Time) uint64 {
	var all uint64
	for _, t := range m.tables() {
		all |= 1 << t
	}
	// A machine that started recently has no history of who went silent:
	// it assumes someone may have.
	if now.Sub(m.born) < m.cfg.DeadAfter()+m.cfg.Grace {
		return all
	}
	var bits uint64
	for _, p := range m.peers {
		if p.hb == nil || p.refused != "" || m.alive(now, p) {
			continue
		}
		if now.Sub(p.lastHeard) >= m.cfg.DeadAfter()+m.cfg.Grace {
			continue
		}
		if State(p.hb.State).Active() {
			bits |= all
		}
		bits |= p.hb.Retaining & all
	}
	return bits
}

// clean turns a table's dirty buckets into owned ones once no host may
// hold flows in them: neither we nor any host we hear knows of flows that
// may be held there (Retaining bits, which include each host's suspicion
// of silent hosts). If a silent host comes back, its own report decides.
func (m *Machine) clean(now time.Time) {
	blocked := m.suspect(now)
	for _, p := range m.peers {
		if m.alive(now, p) {
			blocked |= p.hb.Retaining
		}
	}
	for _, t := range m.tables() {
		if blocked&(1<<t) != 0 || m.count[t][filter.MarkDirty] == 0 {
			continue
		}
		for b := range m.marks[t] {
			if m.marks[t][b] == filter.MarkDirty {
				m.setMark(t, b, filter.MarkOwned)
			}
		}
	}
}

// dropDrained releases retained buckets in which no flow is held any more,
// by a scan taken after they became retained.
func (m *Machine) dropDrained() {
	for _, t := range m.tables() {
		if m.count[t][filter.MarkRetained] == 0 || !m.scannedAt.After(m.retainedAt[t]) {
			continue
		}
		for b := range m.marks[t] {
			if m.marks[t][b] == filter.MarkRetained && (m.held[t] == nil || !m.held[t][uint16(b)]) {
				m.setMark(t, b, filter.MarkNone)
			}
		}
	}
}
