package convergence

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

// Config is what the machine needs to know about its host and cluster.
type Config struct {
	HostID      uint8
	Incarnation uint64 // strictly greater on every agent start
	// PrevIncarnation is the last incarnation this host used before this
	// start, if recorded (0: unknown). Peers that still echo it for our
	// ID heard our earlier life, not another host with our ID.
	PrevIncarnation uint64
	ClusterVIP      netip.Addr
	MAC             [6]byte
	DedicatedIP     netip.Addr
	Rules           []filter.PortRule    // canonical order
	ConfigDigest    [16]byte             // of the cluster section; must match to be admitted
	Settings        []filter.RuleSetting // this host's per-rule settings
	// Timing is the heartbeat period and loss tolerance, and the lease
	// and dead-after durations derived from them.
	heartbeat.Timing
	// Grace: buckets inherited from a host declared dead stay dirty this
	// long (SYNs and our own flows only), unless that host comes back and
	// reports it holds nothing there.
	Grace time.Duration
	// DrainTimeout ends a drainstop even if flows remain (0: never).
	DrainTimeout time.Duration
	// Quorum: a host takes part only while it hears, and is heard by, a
	// majority of the voters; the minority side of a partition then stops
	// taking new flows before the majority takes its buckets. Off: as
	// NLB, both sides serve. The voters are hosts 1..QuorumVoters when it
	// is not 0 (strict majority), else the members of the last epoch this
	// host agreed to (more than half, or exactly half with the lowest
	// voter), starting from Voters.
	Quorum       bool
	QuorumVoters int
	// Voters is the voter set recorded before this start (bit i-1 = host
	// i; 0: none, the host may found a cluster), agreed in VotersEpoch.
	Voters, VotersEpoch uint64
	// StartState is started, stopped or suspended.
	StartState State
	// FlapWindow, when not 0, damps flapping peers: a peer evicted more
	// than once within FlapWindow of its previous eviction is readmitted
	// to the membership only after it has been heard without a break for
	// a hold-down that doubles with each such eviction (DeadAfter, 2×, 4×
	// … at most MaxHoldDown). A first eviction (a crash and a restart)
	// is not damped. Meanwhile the peer is heard (it can lead, guide,
	// relay) but is not a member: it sees an epoch without itself and
	// takes no flows, as across a one-way link.
	FlapWindow time.Duration
	// HealthDown lists the rules (indexes) whose health check failed at
	// start: the host joins with them drained.
	HealthDown []int
	// RuleFlags are the operator's per-rule overrides at start
	// (heartbeat.RuleDisabled, RuleDraining; index = rule), as retained
	// across a restart; shorter than Rules or nil: the rest enabled.
	RuleFlags []uint8
}

// Machine is one host's convergence state machine. It is pure: Step takes
// the time and an event, changes the machine and returns actions; it reads
// no clock, opens no socket and starts no goroutine.
type Machine struct {
	cfg     Config
	state   State
	since   time.Time // when the current state began
	seq     uint64
	peers   map[uint8]*peer
	epoch   *Epoch
	phase   uint8
	maxSeen uint64 // highest epoch number seen
	asm     *assembly

	marks      [filter.MaxRules + 1]filter.Marks
	dirtyMarks bool
	// count[t][k] is the number of buckets of table t with mark k, kept by
	// setMark, so that a step skips tables with nothing to do instead of
	// scanning 4096 marks each.
	count [filter.MaxRules + 1][4]int
	held  [filter.MaxRules + 1]map[uint16]bool
	// scannedAt is when the newest held-flow scan began; retainedAt[t] is
	// when a bucket of table t last became retained. Only a scan begun
	// after that may release it: an older one misses flows opened since.
	scannedAt  time.Time
	retainedAt [filter.MaxRules + 1]time.Time
	stepAt     time.Time // the time of the current Step

	holdUntil  time.Time // a founder opens nothing before this
	lostQuorum bool
	// voters is the dynamic voter set (Config.Quorum, no QuorumVoters),
	// agreed in votersEpoch: the members of that epoch.
	voters, votersEpoch uint64
	out                 []Action // actions produced by evaluate
	// refusedMismatch: refused because a running cluster has other
	// settings (lifted when it is gone; a duplicate ID is not).
	refusedMismatch bool
	born            time.Time // first Step

	ruleFlags  []uint8 // operator overrides per rule (heartbeat.Rule*)
	healthDown []bool  // rules whose local health check fails: drained
	drainStart time.Time
	// listenStart is when this machine began to listen: at its first tick,
	// and again when it leaves a refusal. A joiner speaks once it has
	// listened for DeadAfter; a host started again after an operator's
	// stop has listened all along (it kept sending and receiving) and
	// rejoins at once, so its peers never see it fall silent.
	listenStart time.Time
	// spoke: this machine has sent a heartbeat (its peers know this
	// incarnation). dupSince: since when peers hear another host with our
	// ID while we have not spoken; refusedDup: refused for it.
	spoke      bool
	spokeAt    time.Time
	dupSince   time.Time
	refusedDup bool
	// unverified counts heartbeats heard but not admitted: they did not
	// echo this host's incarnation.
	unverified uint64
	// refusedEpoch is the last epoch whose tables failed verifyTables
	// (reported once).
	refusedEpoch uint64
	// priorityConflicts were found in the last adopted epoch (reported once).
	priorityConflicts []PriorityConflict
	// lossUntil: this host's receive path lost frames recently; until
	// then deadAfter is doubled.
	lossUntil time.Time
	events    []Action
}

// NewMachine returns a machine in its start state; it does nothing until
// stepped.
func NewMachine(cfg Config) *Machine {
	m := &Machine{cfg: cfg, peers: map[uint8]*peer{}, ruleFlags: make([]uint8, len(cfg.Rules)),
		healthDown: make([]bool, len(cfg.Rules)), voters: cfg.Voters, votersEpoch: cfg.VotersEpoch}
	for _, i := range cfg.HealthDown {
		if i >= 0 && i < len(m.healthDown) {
			m.healthDown[i] = true
		}
	}
	copy(m.ruleFlags, cfg.RuleFlags)
	for t := range m.count {
		m.count[t][filter.MarkNone] = filter.Buckets
	}
	switch cfg.StartState {
	case StateStopped, StateSuspended:
		m.state = cfg.StartState
	default:
		m.state = StateJoining
	}
	return m
}

// Restore seeds a machine for an agent that restarted while its pinned
// data plane kept running: marks are what the kernel holds. The pinned
// state proves this host owns its ID, so it skips the silent listening
// and speaks at once: peers must learn without delay which flows it still
// holds. With lease time left, no peer can have declared it dead yet, so it
// stays the same member (a new incarnation) and keeps its buckets;
// otherwise it first closes them (held flows go on) and rejoins.
func (m *Machine) Restore(now time.Time, marks [filter.MaxRules + 1]*filter.Marks, leaseLeft time.Duration) {
	m.stepAt = now
	for t, mk := range marks {
		if mk != nil {
			m.marks[t] = *mk
			m.count[t] = [4]int{}
			for _, k := range mk {
				m.count[t][k&3]++
			}
		}
	}
	if m.state == StateStopped || m.state == StateSuspended {
		// Started stopped or suspended (host.initial_state, or the
		// operator's retained state): as the command would, the owned
		// buckets close at once; a stop keeps the flows it holds.
		m.closeAll(m.state == StateSuspended)
		m.dirtyMarks = true
		return
	}
	if m.state != StateJoining {
		return
	}
	m.phase = phaseNone
	if leaseLeft > 0 {
		m.setState(now, StateConverging, "restarted with a valid lease")
		return
	}
	m.closeAll(false)
	m.dirtyMarks = true
	m.setState(now, StateConverging, "restarted; lease had expired")
}

// State returns the current state.
func (m *Machine) State() State { return m.state }

// RuleFlags returns the operator's per-rule overrides (heartbeat.Rule*).
func (m *Machine) RuleFlags() []uint8 { return slices.Clone(m.ruleFlags) }

// HealthDown returns, per rule, whether its local health check drained it.
func (m *Machine) HealthDown() []bool { return slices.Clone(m.healthDown) }

// Marks returns the current mark of bucket b of table t.
func (m *Machine) Mark(t, b int) filter.Mark { return m.marks[t][b] }

// Peers returns the IDs and last heartbeats of the hosts heard.
func (m *Machine) Peers() map[uint8]*heartbeat.Heartbeat {
	out := map[uint8]*heartbeat.Heartbeat{}
	for id, p := range m.peers {
		out[id] = p.hb
	}
	return out
}

func (m *Machine) ntables() int { return len(m.cfg.Rules) + 1 }

func (m *Machine) tables() []int {
	ts := make([]int, 0, m.ntables())
	for i := range m.cfg.Rules {
		ts = append(ts, i)
	}
	return append(ts, filter.DefaultRule)
}

// setState is the one place where the state changes.
func (m *Machine) setState(now time.Time, s State, why string) {
	if m.state == s {
		return
	}
	m.state = s
	m.since = now
	m.events = append(m.events, Notice{Kind: NoticeState, Host: m.cfg.HostID, Msg: s.String() + ": " + why})
}

// Step advances the machine.
func (m *Machine) Step(now time.Time, ev Event) []Action {
	if m.born.IsZero() {
		m.born = now
	}
	m.stepAt = now
	m.events = m.events[:0]
	var out []Action
	switch ev := ev.(type) {
	case Tick:
		if ev.LocalLoss {
			m.lossUntil = now.Add(m.cfg.DeadAfter())
		}
		out = m.tick(now)
	case Received:
		out = m.receive(now, ev)
	case HeldScan:
		if ev.At.After(m.scannedAt) {
			m.held, m.scannedAt = ev.Held, ev.At
		}
	case Command:
		m.command(now, ev)
	}
	m.evaluate(now)
	out = append(out, m.out...)
	m.out = m.out[:0]
	if m.dirtyMarks {
		var im InstallMarks
		for _, t := range m.tables() {
			mk := m.marks[t]
			im.Marks[t] = &mk
		}
		out = marksBeforeRenewal(out, im)
		m.dirtyMarks = false
	}
	return append(out, m.events...)
}

func (m *Machine) heartbeat(now time.Time) *heartbeat.Heartbeat {
	m.seq++
	h := &heartbeat.Heartbeat{
		ClusterVIP: m.cfg.ClusterVIP, HostID: m.cfg.HostID, State: uint8(m.state),
		Incarnation: m.cfg.Incarnation, Seq: m.seq, MAC: m.cfg.MAC, DedicatedIP: m.cfg.DedicatedIP,
		ConfigDigest: m.cfg.ConfigDigest, View: m.view(now), Phase: m.phase,
		Retaining: m.retaining() | m.suspect(now), Rules: m.effective(),
	}
	if m.epoch != nil {
		h.Epoch, h.EpochDigest, h.Members = m.epoch.Num, m.epoch.Digest, m.epoch.Members
	}
	h.VotersEpoch, h.Voters = m.votersEpoch, m.voters
	for id, p := range m.peers {
		h.Echo[id-1] = p.inc
	}
	return h
}

func (m *Machine) tick(now time.Time) []Action {
	var out []Action
	if m.listenStart.IsZero() {
		m.listenStart = now
	}
	if m.state == StateRefused && m.refusedMismatch && !m.mismatched(now) {
		m.refusedMismatch = false
		m.listenStart = now
		m.setState(now, StateJoining, "the cluster with other settings is gone")
	}
	m.checkDuplicate(now)
	for id, p := range m.peers {
		// Only a member's silence is a failure: a host that stopped,
		// suspended, drained or never joined left on purpose (or never
		// came), and its silence is neither evicted nor counted by flap
		// damping.
		live := m.alive(now, p)
		wasLive := p.live
		p.live = live
		if wasLive && !live && p.hb != nil && p.refused == "" && State(p.hb.State).Active() {
			m.events = append(m.events, Notice{Kind: NoticeEvict, Host: id, Msg: "no heartbeat"})
			if m.cfg.FlapWindow > 0 && p.evictions > 0 && now.Sub(p.lastEvict) > m.cfg.FlapWindow {
				p.evictions = 0 // stable for a window: forgiven
			}
			p.evictions++
			p.lastEvict = now
		}
	}
	// A joiner listens for DeadAfter before it speaks: it learns the epoch
	// and hears any host that already uses its ID.
	if m.state != StateJoining || m.mayJoin(now) {
		// A host refused for a duplicate ID stays silent (its frames would
		// supersede the rightful owner's at every peer); one refused for
		// other settings keeps announcing itself so the cluster reports it.
		if m.state != StateRefused || m.refusedMismatch {
			out = append(out, Send{Msg: m.heartbeat(now)})
			if !m.spoke {
				m.spoke, m.spokeAt = true, now
			}
		}
	}
	// The source of the tables (normally the leader) resends them while a
	// host it hears lags behind; so does a relay for a lagging host that
	// does not hear the leader.
	if m.epoch != nil && m.state.Active() {
		src, lead := m.source(now), m.leader(now)
		for id, p := range m.peers {
			if !m.alive(now, p) || id == m.cfg.HostID || State(p.hb.State) == StateRefused ||
				p.hb.Epoch == m.epoch.Num && p.hb.EpochDigest == m.epoch.Digest {
				continue
			}
			relay := p.hb.View&(1<<(lead-1)) == 0 && p.hb.View&(1<<(m.cfg.HostID-1)) != 0
			if src == 0 || src > m.cfg.HostID || relay {
				out = append(out, m.chunks()...)
				break
			}
		}
	}
	if m.state == StateDraining && m.cfg.DrainTimeout > 0 && now.Sub(m.drainStart) >= m.cfg.DrainTimeout {
		m.closeAll(true)
		m.phase = phaseNone
		m.setState(now, StateStopped, "drain timeout")
	}
	if m.state.Active() && m.quorum(now) {
		out = append(out, Lease{For: m.cfg.LeaseFor()})
	} else if m.state != StateJoining {
		out = append(out, Lease{For: 0})
	}
	return out
}

// evaluate moves the machine towards the cluster's agreed state.
func (m *Machine) evaluate(now time.Time) {
	if !m.state.Active() && m.state != StateJoining {
		m.dropDrained() // a stopped host's held flows end in their own time
		return
	}
	if m.state == StateJoining {
		if !m.mayJoin(now) || m.awaitingEcho(now) {
			return
		}
		if m.mismatched(now) {
			// A running cluster with other settings: we must not form a
			// second one on the same VIPs. Retried when it is gone.
			m.refusedMismatch = true
			m.events = append(m.events, Notice{Kind: NoticeRefused, Host: m.cfg.HostID, Msg: "cluster settings or port rules differ from the running cluster; not joining"})
			m.setState(now, StateRefused, "config mismatch")
			return
		}
		m.setState(now, StateConverging, "joined")
	}
	if !m.quorum(now) {
		// Minority: take no new flows (held ones go on) and expire the
		// lease at once; rejoin through the handoff when the quorum is back.
		if !m.lostQuorum {
			m.lostQuorum = true
			m.closeAll(false)
			m.phase = phaseNone
			m.epoch = nil
			m.out = append(m.out, Lease{For: 0})
			m.events = append(m.events, Notice{Kind: NoticeQuorum, Host: m.cfg.HostID, Msg: "lost: taking no new flows"})
			if m.state != StateDraining { // a drainstop goes on
				m.setState(now, StateConverging, "no quorum")
			}
		}
		m.dropDrained()
		return
	}
	if m.lostQuorum {
		m.lostQuorum = false
		m.events = append(m.events, Notice{Kind: NoticeQuorum, Host: m.cfg.HostID, Msg: "regained"})
	}
	view := m.view(now)
	leader := m.leader(now)
	if leader == m.cfg.HostID {
		src := m.source(now)
		if m.epoch == nil && src != 0 {
			m.follow(now, m.peers[src].hb) // learn the tables in use first
		}
		// A source whose tables we refused (stale settings, or a lie)
		// must not hold the leader back: it proposes its own.
		if m.epoch != nil || src == 0 || m.refusedEpoch != 0 && m.refusedEpoch == m.peers[src].hb.Epoch {
			m.lead(now, view)
		}
	} else if g := m.guide(now, leader); g != 0 {
		m.follow(now, m.peers[g].hb)
	}
	if m.epoch == nil {
		return
	}
	if m.phase == phaseClosed && !now.Before(m.holdUntil) && m.barrier(now) {
		m.open(now)
	}
	if m.phase == phaseOpen {
		m.clean(now)
	}
	m.dropDrained()
	m.updateState(now, view, leader)
}

func (m *Machine) updateState(now time.Time, view uint64, leader uint8) {
	if m.state == StateDraining {
		for _, t := range m.tables() {
			if m.count[t][filter.MarkNone] != filter.Buckets {
				return
			}
		}
		if m.phase == phaseOpen { // the cluster has taken our buckets
			m.events = append(m.events, Notice{Kind: NoticeDrained, Host: m.cfg.HostID, Msg: "no flows left"})
			m.setState(now, StateStopped, "drained")
		}
		return
	}
	settled := m.phase == phaseOpen
	for _, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).Active() {
			settled = settled && p.hb.Epoch == m.epoch.Num && p.hb.Phase == phaseOpen
		}
	}
	switch {
	case !settled:
		m.setState(now, StateConverging, "epoch changing")
	case leader == m.cfg.HostID:
		m.setState(now, StateDefault, "converged")
	default:
		m.setState(now, StateConverged, "converged")
	}
}

// listened reports whether the machine has listened for DeadAfter since
// it began or left a refusal: it has learnt the epoch and heard any host
// that uses its ID.
func (m *Machine) listened(now time.Time) bool {
	return !m.listenStart.IsZero() && now.Sub(m.listenStart) >= m.cfg.DeadAfter()
}

// idHeldElsewhere reports whether a peer we heard lately hears a host
// with our ID (its view has our bit) in an incarnation that is neither
// ours nor one of our earlier lives (above PrevIncarnation): another host
// uses our ID. Own-ID frames themselves prove nothing (anyone can replay
// one of our earlier life's); peers' frames, admitted or not, are used
// because a joiner that has not spoken can admit none, and a replay of
// one of them echoes only our earlier lives.
func (m *Machine) idHeldElsewhere(now time.Time) bool {
	me := uint64(1) << (m.cfg.HostID - 1)
	for _, p := range m.peers {
		if p.last == nil || now.Sub(p.lastAt) >= m.cfg.DeadAfter() || p.last.View&me == 0 {
			continue
		}
		if e := p.last.Echo[m.cfg.HostID-1]; e != m.cfg.Incarnation && e > m.cfg.PrevIncarnation {
			return true
		}
	}
	return false
}

// mayJoin reports whether a joiner may speak and join: it has listened
// for DeadAfter, and either spoke already in this incarnation (a start
// after a stop) or no peer hears another host with its ID.
func (m *Machine) mayJoin(now time.Time) bool {
	return m.listened(now) && (m.spoke || !m.idHeldElsewhere(now))
}

// awaitingEcho reports whether a joiner has yet to speak, or still waits
// for a peer it heard to echo it: until then that peer is not admitted, and
// joining without it would make a cluster of our own. A frame that never
// echoes us (a replay) is waited for at most DeadAfter.
func (m *Machine) awaitingEcho(now time.Time) bool {
	if !m.spoke {
		return true // its first heartbeat goes out at its next tick
	}
	if now.Sub(m.spokeAt) >= m.cfg.DeadAfter() {
		return false
	}
	for _, p := range m.peers {
		if p.last != nil && p.verified != p.inc && now.Sub(p.lastAt) < m.cfg.DeadAfter() {
			return true
		}
	}
	return false
}

// learnIncarnation: a peer echoes, for our ID, an incarnation above
// ours that no live host holds (the peer does not hear it now): our own
// earlier life, from before the clock stepped back, whose frames set the
// peers' replay floor above us. We take the next one, so that the peers
// stop dropping our frames as stale: normally while we listen, before we
// speak; after it if we spoke without hearing them (we started inside a
// partition, and it healed).
func (m *Machine) learnIncarnation(now time.Time, hb *heartbeat.Heartbeat) {
	e := hb.Echo[m.cfg.HostID-1]
	if e <= m.cfg.Incarnation || hb.View&(1<<(m.cfg.HostID-1)) != 0 {
		return
	}
	if e-m.cfg.Incarnation > uint64(heartbeat.MaxIncarnationAhead) {
		return // not a clock step; a key holder's claim
	}
	m.cfg.Incarnation = e + 1
	m.out = append(m.out, Reincarnate{Incarnation: e + 1})
	m.events = append(m.events, Notice{Kind: NoticeIncarnation, Host: m.cfg.HostID,
		Msg: fmt.Sprintf("peers knew a later incarnation of this host (clock stepped back?); now %d", e+1)})
}

// heldNewer reports whether an admitted peer's frame echoes, for our ID,
// an incarnation newer than ours after we spoke: another host with our
// ID started after us and spoke, and the peers now follow it (our frames
// are stale to them), so we yield. (Before we speak, a newer echo is our
// own earlier life: learnIncarnation.)
func (m *Machine) heldNewer(hb *heartbeat.Heartbeat) bool {
	return m.spoke && m.state != StateRefused && hb.Echo[m.cfg.HostID-1] > m.cfg.Incarnation
}

// Unverified is the number of heartbeats heard but not admitted because
// they did not echo this host's incarnation.
func (m *Machine) Unverified() uint64 { return m.unverified }

// Incarnation is this host's current incarnation.
func (m *Machine) Incarnation() uint64 { return m.cfg.Incarnation }

// checkDuplicate refuses a joiner whose ID peers keep hearing from
// another host for DeadAfter past its listening, and lifts the refusal by
// itself once no peer hears that other host.
func (m *Machine) checkDuplicate(now time.Time) {
	switch {
	case m.state == StateJoining && !m.spoke && m.listened(now) && m.idHeldElsewhere(now):
		if m.dupSince.IsZero() {
			m.dupSince = now
		}
		if now.Sub(m.dupSince) >= m.cfg.DeadAfter() {
			m.refuseDuplicate(now)
		}
	case m.state == StateRefused && m.refusedDup && !m.idHeldElsewhere(now):
		m.refusedDup = false
		m.dupSince = time.Time{}
		m.listenStart = now
		m.setState(now, StateJoining, "the other host with this ID is gone")
	default:
		m.dupSince = time.Time{}
	}
}

// refuseDuplicate makes this host yield its ID: it closes everything and
// falls silent until the other host is gone.
func (m *Machine) refuseDuplicate(now time.Time) {
	m.refusedMismatch, m.refusedDup = false, true
	if m.state != StateRefused {
		m.events = append(m.events, Notice{Kind: NoticeDuplicateID, Host: m.cfg.HostID, Msg: "another host uses this host ID; refusing to join"})
	}
	m.closeAll(true)
	m.phase = phaseNone
	m.spoke = false
	m.setState(now, StateRefused, "duplicate host ID")
}
