package convergence

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

// Config is what the machine needs to know about its host and cluster.
type Config struct {
	HostID       uint8
	Incarnation  uint64 // strictly greater on every agent start
	ClusterVIP   netip.Addr
	MAC          [6]byte
	DedicatedIP  netip.Addr
	Rules        []filter.PortRule // canonical order
	ConfigDigest [16]byte          // of the cluster section; must match to be admitted
	Settings     []filter.RuleSetting     // this host's per-rule settings
	// Timing is the heartbeat period and loss tolerance, and the lease
	// and dead-after durations derived from them.
	heartbeat.Timing
	// Grace: buckets inherited from a host declared dead stay dirty this
	// long (SYNs and our own flows only), unless that host comes back and
	// reports it holds nothing there.
	Grace time.Duration
	// DrainTimeout ends a drainstop even if flows remain (0: never).
	DrainTimeout time.Duration
	// QuorumVoters, when not 0, makes hosts 1..QuorumVoters voters: a host
	// takes part only while it hears, and is heard by, a strict majority of
	// them. The minority side of a partition then stops taking new flows
	// before the majority takes its buckets. 0: as NLB, both sides serve.
	QuorumVoters int
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
}

// MaxHoldDown caps the flap-damping hold-down.
const MaxHoldDown = 30 * time.Second

// holdDown is how long peer p must be heard without a break before it is
// a member again.
func (m *Machine) holdDown(p *peer) time.Duration {
	if m.cfg.FlapWindow == 0 || p.evictions < 2 {
		return 0
	}
	d := m.cfg.DeadAfter() << min(p.evictions-2, 16)
	return min(d, MaxHoldDown)
}

// Events, passed to Step.
type (
	// Tick is the periodic timer, every Config.Period.
	Tick struct{}
	// Received is an authenticated message from a peer (or, with
	// SelfID set, a frame carrying our own host ID).
	Received struct {
		Msg    any // *heartbeat.Heartbeat or *heartbeat.TableChunk
		SelfID bool
	}
	// HeldScan reports, per table, the buckets in which this host still
	// holds flows (from the kernel's socket table).
	HeldScan struct {
		Held [filter.MaxRules + 1]map[uint16]bool
	}
	// Command is an operator command.
	Command struct {
		Op       Op
		Rule     int // for rule operations; -1 = all rules
		Settings []filter.RuleSetting
	}
)

// Op is an operator command.
type Op uint8

const (
	OpStart Op = iota + 1
	OpStop
	OpDrainStop
	OpSuspend
	OpResume
	OpEnableRule
	OpDisableRule
	OpDrainRule
	OpSetSettings // reload with new per-rule settings
	// OpHealthDown drains Rule on this host because its health check
	// fails; OpHealthUp ends that. They are kept apart from the operator's
	// enable/disable/drain: a recovering check does not undo an operator's
	// disable, and an operator's enable does not override a failing check.
	OpHealthDown
	OpHealthUp
)

// Actions, returned by Step.
type (
	// Send transmits a message (*heartbeat.Heartbeat or *heartbeat.TableChunk).
	Send struct{ Msg any }
	// InstallMarks writes this host's marks into the data plane.
	InstallMarks struct {
		Marks [filter.MaxRules + 1]*filter.Marks
	}
	// Lease renews the data-plane lease for For from now; For == 0
	// expires it.
	Lease struct{ For time.Duration }
	// Event is a state change worth one log line.
	Event struct {
		Kind string // "state", "join", "leave", "evict", "refused", "epoch", "drained", "duplicate-id", "quorum"
		Host uint8
		Msg  string
	}
)

// Epoch is an agreed configuration of the cluster: members, their
// settings, and the tables computed from them.
type Epoch struct {
	Num      uint64
	Members  uint64 // bit i-1 = host i
	Settings map[uint8][]filter.RuleSetting
	Tables   Tables
	Digest   [16]byte
}

func digestTables(num, members uint64, t *Tables, ntables int) [16]byte {
	h := sha256.New()
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], num)
	binary.BigEndian.PutUint64(b[8:16], members)
	h.Write(b[:])
	var zero filter.Table
	for i := 0; i < ntables; i++ {
		tab := t[tableIndex(i, ntables)]
		if tab == nil {
			tab = &zero
		}
		h.Write(tab[:])
	}
	var d [16]byte
	copy(d[:], h.Sum(nil))
	return d
}

// tableIndex maps the i-th transmitted table to its index: rules first,
// then the default table last.
func tableIndex(i, ntables int) int {
	if i == ntables-1 {
		return filter.DefaultRule
	}
	return i
}

type peer struct {
	hb        *heartbeat.Heartbeat
	lastHeard time.Time
	refused   string
	reported  bool
	// Flap damping: when it was last heard again after a silence, and
	// its evictions within FlapWindow of each other.
	heardSince time.Time
	evictions  int
	lastEvict  time.Time
}

type assembly struct {
	num    uint64
	tables Tables
	got    map[[2]uint8]bool
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
	// scans counts HeldScan events; retainedAt[t] is the count when a
	// bucket of table t last became retained. Only a scan taken after that
	// may release it: an older one misses flows opened since.
	scans      uint64
	retainedAt [filter.MaxRules + 1]uint64

	holdUntil  time.Time // a founder opens nothing before this
	lostQuorum bool
	out        []any // actions produced by evaluate
	// refusedMismatch: refused because a running cluster has other
	// settings (lifted when it is gone; a duplicate ID is not).
	refusedMismatch bool
	born            time.Time // first Step

	ruleFlags  []uint8 // operator overrides per rule (heartbeat.Rule*)
	healthDown []bool  // rules whose local health check fails: drained
	drainStart time.Time
	events     []any
}

// NewMachine returns a machine in its start state; it does nothing until
// stepped.
func NewMachine(cfg Config) *Machine {
	m := &Machine{cfg: cfg, peers: map[uint8]*peer{}, ruleFlags: make([]uint8, len(cfg.Rules)),
		healthDown: make([]bool, len(cfg.Rules))}
	for _, i := range cfg.HealthDown {
		if i >= 0 && i < len(m.healthDown) {
			m.healthDown[i] = true
		}
	}
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
	for t, mk := range marks {
		if mk != nil {
			m.marks[t] = *mk
			m.count[t] = [4]int{}
			for _, k := range mk {
				m.count[t][k&3]++
			}
		}
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

// Epoch returns the agreed epoch, or nil.
func (m *Machine) Epoch() *Epoch { return m.epoch }

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
	m.events = append(m.events, Event{Kind: "state", Host: m.cfg.HostID, Msg: s.String() + ": " + why})
}

// Step advances the machine.
func (m *Machine) Step(now time.Time, ev any) []any {
	if m.born.IsZero() {
		m.born = now
	}
	m.events = m.events[:0]
	var out []any
	switch ev := ev.(type) {
	case Tick:
		out = m.tick(now)
	case Received:
		out = m.receive(now, ev)
	case HeldScan:
		m.held = ev.Held
		m.scans++
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

// marksBeforeRenewal places im before the first lease renewal in out: a
// renewal lets the kernel take new flows in the buckets it holds owned,
// so buckets this step closes must be closed first (a restarted agent
// whose lease had run out would otherwise reopen, for an instant, buckets
// that other hosts own by now). Messages stay before it: what they
// advertise was installed by an earlier step.
func marksBeforeRenewal(out []any, im InstallMarks) []any {
	for i, a := range out {
		if l, ok := a.(Lease); ok && l.For > 0 {
			return slices.Insert(out, i, any(im))
		}
	}
	return append(out, im)
}

// Heard returns, as a bitmap (bit i-1 = host i), this host and the peers
// heard within DeadAfter that are not refused, whatever their state.
func (m *Machine) Heard(now time.Time) uint64 {
	v := uint64(1) << (m.cfg.HostID - 1)
	for id, p := range m.peers {
		if m.alive(now, p) {
			v |= 1 << (id - 1)
		}
	}
	return v
}

// Silent returns, for each admitted peer that went quiet while taking
// part (its last heartbeat said converging, converged or draining), how
// long ago it was last heard, once that exceeds two periods. Such a
// peer's agent may be dead with its data plane still filtering: after
// LeaseFor its lease has run out, after DeadAfter it is evicted.
func (m *Machine) Silent(now time.Time) map[uint8]time.Duration {
	var out map[uint8]time.Duration
	for id, p := range m.peers {
		if p.hb == nil || p.refused != "" || !State(p.hb.State).active() {
			continue
		}
		if d := now.Sub(p.lastHeard); d > 2*m.cfg.Period {
			if out == nil {
				out = map[uint8]time.Duration{}
			}
			out[id] = d
		}
	}
	return out
}

func (m *Machine) alive(now time.Time, p *peer) bool {
	return p.refused == "" && p.hb != nil && now.Sub(p.lastHeard) < m.cfg.DeadAfter()
}

// view returns the hosts heard and admitted that take part (plus us when
// we do), as a bitmap.
func (m *Machine) view(now time.Time) uint64 {
	var v uint64
	if m.state.active() {
		v |= 1 << (m.cfg.HostID - 1)
	}
	for id, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).active() && now.Sub(p.heardSince) >= m.holdDown(p) {
			v |= 1 << (id - 1)
		}
	}
	return v
}

func lowest(v uint64) uint8 {
	if v == 0 {
		return 0
	}
	return uint8(bits.TrailingZeros64(v) + 1)
}

func (m *Machine) receive(now time.Time, r Received) []any {
	switch msg := r.Msg.(type) {
	case *heartbeat.Heartbeat:
		if r.SelfID || msg.HostID == m.cfg.HostID {
			if msg.Incarnation == m.cfg.Incarnation {
				return nil
			}
			// Another host uses our ID. A joiner yields at once (it has
			// sent nothing); otherwise the older incarnation yields,
			// because peers already follow the newer one.
			if m.state == StateJoining || msg.Incarnation > m.cfg.Incarnation {
				m.refusedMismatch = false
				if m.state != StateRefused {
					m.events = append(m.events, Event{Kind: "duplicate-id", Host: m.cfg.HostID, Msg: "another host uses this host ID; refusing to join"})
				}
				m.closeAll(true)
				m.phase = phaseNone
				m.setState(now, StateRefused, "duplicate host ID")
			}
			return nil
		}
		p := m.peers[msg.HostID]
		if p == nil {
			p = &peer{}
			m.peers[msg.HostID] = p
		}
		if msg.ConfigDigest != m.cfg.ConfigDigest {
			if !p.reported {
				m.events = append(m.events, Event{Kind: "refused", Host: msg.HostID, Msg: "cluster settings or port rules differ"})
				p.reported = true
			}
			p.refused = "config mismatch"
			p.hb, p.lastHeard = msg, now
			return nil
		}
		if p.refused != "" || p.hb == nil || !m.alive(now, p) {
			p.heardSince = now
			if p.hb != nil && msg.Incarnation > p.hb.Incarnation {
				p.evictions = 0 // a restarted agent, not a flapping link
			}
			if hd := m.holdDown(p); hd > 0 {
				m.events = append(m.events, Event{Kind: "damped", Host: msg.HostID,
					Msg: fmt.Sprintf("flapping (%d evictions): a member again after %v of steady heartbeats", p.evictions, hd)})
			} else {
				m.events = append(m.events, Event{Kind: "join", Host: msg.HostID, Msg: "heard"})
			}
		} else if was, is := State(p.hb.State), State(msg.State); was.active() && !is.active() {
			m.events = append(m.events, Event{Kind: "leave", Host: msg.HostID, Msg: is.String()})
		}
		p.refused, p.reported = "", false
		p.hb, p.lastHeard = msg, now
		if msg.Epoch > m.maxSeen {
			m.maxSeen = msg.Epoch
		}
	case *heartbeat.TableChunk:
		m.receiveChunk(now, msg)
	}
	return nil
}

// leader is the lowest host ID among the hosts we hear and the hosts they
// hear (their views). Counting what peers hear keeps a host whose link
// from the leader fails one way from leading a second cluster of its own
// and outbidding the real leader's epochs forever.
func (m *Machine) leader(now time.Time) uint8 {
	v := m.view(now)
	for _, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).active() {
			v |= p.hb.View
		}
	}
	return lowest(v)
}

// guide is the host whose epoch we follow and whose table chunks we
// accept: the leader if we hear it, else the lowest host we hear that
// hears the leader (it relays the leader's epoch and tables). A leader
// without an epoch is guided by the source.
func (m *Machine) guide(now time.Time, leader uint8) uint8 {
	if leader == m.cfg.HostID {
		return m.source(now)
	}
	if p := m.peers[leader]; p != nil && m.alive(now, p) {
		return leader
	}
	best := uint8(0)
	for id, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).active() && p.hb.View&(1<<(leader-1)) != 0 && p.hb.Epoch != 0 && (best == 0 || id < best) {
			best = id
		}
	}
	return best
}

// source is the lowest peer we hear that has an epoch: the host whose
// tables we take. It is the leader, except while the leader itself has
// none (it restarted, or joined with the lowest ID): then the leader too
// adopts the source's tables before it proposes anything.
func (m *Machine) source(now time.Time) uint8 {
	best := uint8(0)
	for id, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).active() && p.hb.Epoch != 0 && (best == 0 || id < best) {
			best = id
		}
	}
	return best
}

func (m *Machine) receiveChunk(now time.Time, c *heartbeat.TableChunk) {
	if c.HostID != m.guide(now, m.leader(now)) || int(c.Table) >= m.ntables() || int(c.Chunk) >= filter.Buckets/heartbeat.ChunkLen {
		return
	}
	if src := m.peers[c.HostID]; m.epoch != nil && m.epoch.Num == c.Epoch && src != nil && src.hb.EpochDigest == m.epoch.Digest {
		return
	}
	if m.asm == nil || m.asm.num != c.Epoch {
		m.asm = &assembly{num: c.Epoch, got: map[[2]uint8]bool{}}
	}
	t := tableIndex(int(c.Table), m.ntables())
	if m.asm.tables[t] == nil {
		m.asm.tables[t] = new(filter.Table)
	}
	copy(m.asm.tables[t][int(c.Chunk)*heartbeat.ChunkLen:], c.Owners[:])
	m.asm.got[[2]uint8{c.Table, c.Chunk}] = true
}

func (m *Machine) command(now time.Time, c Command) {
	switch c.Op {
	case OpStart, OpResume:
		if c.Op == OpStart && m.state == StateSuspended {
			return // only resume leaves suspended
		}
		if m.state == StateStopped || m.state == StateSuspended || m.state == StateRefused {
			m.setState(now, StateJoining, "start")
			m.phase = phaseNone
			m.epoch = nil
		}
	case OpStop, OpSuspend:
		m.closeAll(true) // as NLB: stop ends the flows this host handles
		m.phase = phaseNone
		s := StateStopped
		if c.Op == OpSuspend {
			s = StateSuspended
		}
		m.setState(now, s, "operator")
	case OpDrainStop:
		if m.state.active() && m.state != StateDraining {
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
					// Disable also ends the flows this host holds.
					for b := range m.marks[i] {
						if m.marks[i][b] == filter.MarkRetained {
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

// effective returns this host's advertised settings: configured ones,
// with operator overrides and drainstop applied.
func (m *Machine) effective() []heartbeat.RuleSetting {
	out := make([]heartbeat.RuleSetting, len(m.cfg.Settings))
	for i, s := range m.cfg.Settings {
		w := uint8(s.Weight)
		f := m.ruleFlags[i]
		if f == 0 && m.healthDown[i] {
			f = heartbeat.RuleDraining
		}
		if f != 0 || m.state == StateDraining {
			w = 0
			if m.state == StateDraining {
				f |= heartbeat.RuleDraining
			}
		}
		out[i] = heartbeat.RuleSetting{Weight: w, Priority: uint8(s.Priority), Flags: f}
	}
	return out
}

func toSettings(rs []heartbeat.RuleSetting, n int) []filter.RuleSetting {
	out := make([]filter.RuleSetting, n)
	for i := range out {
		if i < len(rs) {
			out[i] = filter.RuleSetting{Weight: uint32(rs[i].Weight), Priority: int(rs[i].Priority)}
			if rs[i].Flags != 0 {
				out[i].Priority = 0 // out of single-host selection
			}
		}
	}
	return out
}

func (m *Machine) setMark(t, b int, k filter.Mark) {
	if old := m.marks[t][b]; old != k {
		m.count[t][old]--
		m.count[t][k]++
		m.marks[t][b] = k
		m.dirtyMarks = true
		if k == filter.MarkRetained {
			m.retainedAt[t] = m.scans
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
	return h
}

func (m *Machine) tick(now time.Time) []any {
	var out []any
	if m.state == StateJoining && m.since.IsZero() {
		m.since = now
	}
	if m.state == StateRefused && m.refusedMismatch && !m.mismatched(now) {
		m.refusedMismatch = false
		m.setState(now, StateJoining, "the cluster with other settings is gone")
	}
	for id, p := range m.peers {
		if p.hb != nil && p.refused == "" && now.Sub(p.lastHeard) >= m.cfg.DeadAfter() && now.Sub(p.lastHeard) < m.cfg.DeadAfter()+m.cfg.Period {
			m.events = append(m.events, Event{Kind: "evict", Host: id, Msg: "no heartbeat"})
			if m.cfg.FlapWindow > 0 && p.evictions > 0 && now.Sub(p.lastEvict) > m.cfg.FlapWindow {
				p.evictions = 0 // stable for a window: forgiven
			}
			p.evictions++
			p.lastEvict = now
		}
	}
	// A joiner listens for DeadAfter before it speaks: it learns the epoch
	// and hears any host that already uses its ID.
	if m.state != StateJoining || now.Sub(m.since) >= m.cfg.DeadAfter() {
		// A host refused for a duplicate ID stays silent (its frames would
		// supersede the rightful owner's at every peer); one refused for
		// other settings keeps announcing itself so the cluster reports it.
		if m.state != StateRefused || m.refusedMismatch {
			out = append(out, Send{Msg: m.heartbeat(now)})
		}
	}
	// The source of the tables (normally the leader) resends them while a
	// host it hears lags behind; so does a relay for a lagging host that
	// does not hear the leader.
	if m.epoch != nil && m.state.active() {
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
	if m.state.active() && m.quorum(now) {
		out = append(out, Lease{For: m.cfg.LeaseFor()})
	} else if m.state != StateJoining {
		out = append(out, Lease{For: 0})
	}
	return out
}

// quorumHorizon: a voter counts towards the quorum if heard this
// recently: three periods less than DeadAfter, so a host that loses the
// quorum in a partition stops (and expires its lease) before the other side
// can declare it dead.
func (m *Machine) quorumHorizon() time.Duration {
	h := m.cfg.DeadAfter() - 3*m.cfg.Period
	if h < m.cfg.Period {
		h = m.cfg.Period
	}
	return h
}

// quorum: off, or we hear, and are heard by, a strict majority of voters
// (ourselves included when we are one).
func (m *Machine) quorum(now time.Time) bool {
	n := m.cfg.QuorumVoters
	if n <= 0 {
		return true
	}
	votes := 0
	if int(m.cfg.HostID) <= n {
		votes++
	}
	me := uint64(1) << (m.cfg.HostID - 1)
	for id, p := range m.peers {
		if int(id) <= n && p.refused == "" && p.hb != nil && now.Sub(p.lastHeard) < m.quorumHorizon() &&
			State(p.hb.State).active() && p.hb.View&me != 0 {
			votes++
		}
	}
	return 2*votes > n
}

func (m *Machine) chunks() []any {
	var out []any
	n := m.ntables()
	var zero filter.Table
	for i := 0; i < n; i++ {
		tab := m.epoch.Tables[tableIndex(i, n)]
		if tab == nil {
			tab = &zero
		}
		for c := 0; c < filter.Buckets/heartbeat.ChunkLen; c++ {
			m.seq++
			ch := &heartbeat.TableChunk{ClusterVIP: m.cfg.ClusterVIP, HostID: m.cfg.HostID,
				Table: uint8(i), Chunk: uint8(c), Incarnation: m.cfg.Incarnation, Seq: m.seq, Epoch: m.epoch.Num}
			copy(ch.Owners[:], tab[c*heartbeat.ChunkLen:])
			out = append(out, Send{Msg: ch})
		}
	}
	return out
}

// evaluate moves the machine towards the cluster's agreed state.
func (m *Machine) evaluate(now time.Time) {
	if !m.state.active() && m.state != StateJoining {
		return
	}
	if m.state == StateJoining {
		if m.since.IsZero() || now.Sub(m.since) < m.cfg.DeadAfter() {
			return
		}
		if m.mismatched(now) {
			// A running cluster with other settings: we must not form a
			// second one on the same VIPs. Retried when it is gone.
			m.refusedMismatch = true
			m.events = append(m.events, Event{Kind: "refused", Host: m.cfg.HostID, Msg: "cluster settings or port rules differ from the running cluster; not joining"})
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
			m.events = append(m.events, Event{Kind: "quorum", Host: m.cfg.HostID, Msg: "lost: taking no new flows"})
			if m.state != StateDraining { // a drainstop goes on
				m.setState(now, StateConverging, "no quorum")
			}
		}
		m.dropDrained()
		return
	}
	if m.lostQuorum {
		m.lostQuorum = false
		m.events = append(m.events, Event{Kind: "quorum", Host: m.cfg.HostID, Msg: "regained"})
	}
	view := m.view(now)
	leader := m.leader(now)
	if leader == m.cfg.HostID {
		if src := m.source(now); m.epoch == nil && src != 0 {
			m.follow(now, m.peers[src].hb) // learn the tables in use first
		}
		if m.epoch != nil || m.source(now) == 0 {
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

// lead proposes a new epoch when the membership or settings changed.
func (m *Machine) lead(now time.Time, view uint64) {
	settings := map[uint8][]filter.RuleSetting{m.cfg.HostID: toSettings(m.effective(), len(m.cfg.Rules))}
	for id, p := range m.peers {
		if view&(1<<(id-1)) != 0 {
			settings[id] = toSettings(p.hb.Rules, len(m.cfg.Rules))
		}
	}
	if m.epoch != nil && m.epoch.Members == view && sameSettings(m.epoch.Settings, settings) && !m.conflict(now) {
		return
	}
	var prev *Tables
	if m.epoch != nil {
		prev = &m.epoch.Tables
	} else {
		// Founding a cluster from nothing: another host may be founding
		// one at this instant, unheard because listeners are silent. Open
		// nothing for DeadAfter while we announce ourselves; if one
		// exists, we hear it, and the lower ID proposes for both.
		m.holdUntil = now.Add(m.cfg.DeadAfter())
	}
	num := m.maxSeen + 1
	if m.epoch != nil && m.epoch.Num >= num {
		num = m.epoch.Num + 1
	}
	e := &Epoch{Num: num, Members: view, Settings: settings, Tables: *ComputeTables(m.cfg.Rules, settings, prev)}
	// The default host is the lowest member that is not draining.
	def := uint8(0)
	for id := uint8(1); id <= filter.MaxHostID; id++ {
		if view&(1<<(id-1)) == 0 {
			continue
		}
		draining := id == m.cfg.HostID && m.state == StateDraining
		if p := m.peers[id]; id != m.cfg.HostID && p != nil && State(p.hb.State) == StateDraining {
			draining = true
		}
		if def == 0 || !draining && def != 0 && m.isDraining(def) {
			def = id
		}
	}
	e.Tables[filter.DefaultRule] = filter.Uniform(def)
	e.Digest = digestTables(e.Num, e.Members, &e.Tables, m.ntables())
	m.events = append(m.events, Event{Kind: "epoch", Host: m.cfg.HostID, Msg: "proposed"})
	m.adopt(now, e)
}

// conflict: a host we hear has an epoch with our number (or a higher one)
// but other contents. Two sides of a partition numbered their epochs
// independently; a fresh epoch above both settles it.
func (m *Machine) conflict(now time.Time) bool {
	for _, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).active() && p.hb.Epoch >= m.epoch.Num && p.hb.EpochDigest != m.epoch.Digest {
			return true
		}
	}
	return false
}

// mismatched: an active host with other cluster settings is heard.
func (m *Machine) mismatched(now time.Time) bool {
	for _, p := range m.peers {
		if p.refused != "" && p.hb != nil && now.Sub(p.lastHeard) < m.cfg.DeadAfter() && State(p.hb.State).active() {
			return true
		}
	}
	return false
}

func (m *Machine) isDraining(id uint8) bool {
	if id == m.cfg.HostID {
		return m.state == StateDraining
	}
	p := m.peers[id]
	return p != nil && p.hb != nil && State(p.hb.State) == StateDraining
}

func sameSettings(a, b map[uint8][]filter.RuleSetting) bool {
	if len(a) != len(b) {
		return false
	}
	for id, x := range a {
		y, ok := b[id]
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
	}
	return true
}

// follow adopts the leader's epoch once its tables are complete and match
// its digest.
func (m *Machine) follow(now time.Time, lhb *heartbeat.Heartbeat) {
	if lhb.Epoch == 0 || m.epoch != nil && m.epoch.Num == lhb.Epoch && m.epoch.Digest == lhb.EpochDigest {
		return
	}
	if lhb.Members&(1<<(m.cfg.HostID-1)) == 0 {
		// The cluster's epoch does not have us: we own nothing in it.
		// Close at once, without waiting for its tables.
		m.closeAll(false)
	}
	if m.asm == nil || m.asm.num != lhb.Epoch || len(m.asm.got) < m.ntables()*filter.Buckets/heartbeat.ChunkLen {
		return
	}
	e := &Epoch{Num: lhb.Epoch, Members: lhb.Members, Tables: m.asm.tables}
	if digestTables(e.Num, e.Members, &e.Tables, m.ntables()) != lhb.EpochDigest {
		m.asm = nil // inconsistent chunks (e.g. from two epochs): start over
		return
	}
	e.Digest = lhb.EpochDigest
	m.adopt(now, e)
}

// adopt makes e the agreed epoch and closes every open bucket it does not
// give us: phase one of the handoff.
func (m *Machine) adopt(now time.Time, e *Epoch) {
	if e.Num > m.maxSeen {
		m.maxSeen = e.Num
	}
	m.asm = nil
	// Hosts that were not in our previous epoch (joiners, or the other
	// side of a healed partition, which may have served our buckets) may
	// hold flows in the buckets we keep: those go back to dirty until
	// nobody reports retained flows.
	var prevMembers uint64
	if m.epoch != nil {
		prevMembers = m.epoch.Members
	}
	newcomers := e.Members &^ prevMembers &^ (1 << (m.cfg.HostID - 1))
	for _, t := range m.tables() {
		tab := e.Tables[t]
		for b := range m.marks[t] {
			k := m.marks[t][b]
			switch {
			case (k == filter.MarkOwned || k == filter.MarkDirty) && (tab == nil || tab[b] != m.cfg.HostID):
				m.setMark(t, b, filter.MarkRetained)
			case k == filter.MarkOwned && newcomers != 0:
				m.setMark(t, b, filter.MarkDirty)
			}
		}
	}
	m.epoch = e
	m.phase = phaseClosed
	m.events = append(m.events, Event{Kind: "epoch", Host: m.cfg.HostID, Msg: "adopted"})
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
		if m.alive(now, p) && State(p.hb.State).active() {
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
		if State(p.hb.State).active() {
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
		if m.count[t][filter.MarkRetained] == 0 || m.scans <= m.retainedAt[t] {
			continue
		}
		for b := range m.marks[t] {
			if m.marks[t][b] == filter.MarkRetained && (m.held[t] == nil || !m.held[t][uint16(b)]) {
				m.setMark(t, b, filter.MarkNone)
			}
		}
	}
}

func (m *Machine) updateState(now time.Time, view uint64, leader uint8) {
	if m.state == StateDraining {
		for _, t := range m.tables() {
			if m.count[t][filter.MarkNone] != filter.Buckets {
				return
			}
		}
		if m.phase == phaseOpen { // the cluster has taken our buckets
			m.events = append(m.events, Event{Kind: "drained", Host: m.cfg.HostID, Msg: "no flows left"})
			m.setState(now, StateStopped, "drained")
		}
		return
	}
	settled := m.phase == phaseOpen
	for _, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).active() {
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
