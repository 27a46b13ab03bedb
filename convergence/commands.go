package convergence

import (
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

func (m *Machine) command(now time.Time, c Command) {
	switch c.Op {
	case OpStart, OpResume:
		if c.Op == OpStart && m.state == StateSuspended {
			return // only resume leaves suspended
		}
		if c.Op == OpStart && m.state == StateDraining {
			// A start cancels a drainstop in progress: the host takes
			// new flows again (the leader sees it active again).
			m.setState(now, StateConverging, "start: drainstop cancelled")
			return
		}
		if m.state == StateStopped || m.state == StateSuspended || m.state == StateRefused {
			if m.state == StateRefused {
				m.listenStart = now // listen again before speaking
			}
			m.setState(now, StateJoining, "start")
			m.phase = phaseNone
			m.epoch = nil
		}
	case OpStop, OpSuspend:
		// A stop takes no new flows from now on, and the connections this
		// host holds go on (retained buckets, released by the held-flow
		// scan) while the others take its buckets: a planned change drops
		// nothing. Suspend is the hard cut: as NLB's stop, it ends them.
		m.closeAll(c.Op == OpSuspend)
		m.phase = phaseNone
		s := StateStopped
		if c.Op == OpSuspend {
			s = StateSuspended
		}
		m.setState(now, s, "operator")
	case OpDrainStop:
		if m.state.Active() && m.state != StateDraining {
			m.drainStart = now
			m.setState(now, StateDraining, "drainstop")
		}
	case OpEnableRule, OpDisableRule, OpDrainRule:
		var f uint8
		switch c.Op {
		case OpDisableRule:
			f = heartbeat.RuleDisabled
		case OpDrainRule:
			f = heartbeat.RuleDraining
		}
		for i := range m.ruleFlags {
			if c.Rule < 0 || c.Rule == i {
				m.ruleFlags[i] = f
				if f == heartbeat.RuleDisabled {
					// Disable takes effect at once on this host: it takes
					// no packet of the rule from now on (new flows, and
					// the flows it holds, which end), without waiting for
					// the epoch that gives its buckets to the others.
					for b := range m.marks[i] {
						if m.marks[i][b] != filter.MarkNone {
							m.setMark(i, b, filter.MarkNone)
						}
					}
				}
			}
		}
	case OpHealthDown, OpHealthUp:
		if c.Rule >= 0 && c.Rule < len(m.healthDown) {
			m.healthDown[c.Rule] = c.Op == OpHealthDown
		}
	case OpSetSettings:
		if len(c.Settings) == len(m.cfg.Settings) {
			m.cfg.Settings = append([]filter.RuleSetting(nil), c.Settings...)
		}
	}
}

func (m *Machine) isDraining(id uint8) bool {
	if id == m.cfg.HostID {
		return m.state == StateDraining
	}
	p := m.peers[id]
	return p != nil && p.hb != nil && State(p.hb.State) == StateDraining
}
