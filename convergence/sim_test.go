package convergence

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

// The simulation runs N hosts' machines over heartbeat.Network with a fake
// clock. Each host has a model kernel: the marks and lease its data plane
// would hold, which survive an agent crash (pinned) but not a host crash.
// Synthetic TCP flows exercise the marks: after every step the checks
// below must hold.
//
//	S1 (one opener): no bucket is open for new flows (owned or dirty, lease
//	   valid, kernel up) on two hosts that a client can both reach.
//	S2 (held flows): no host accepts a packet of a flow another host holds.
//	L  (liveness): once membership is stable and the network clean, every
//	   bucket of every table is open on exactly one host within
//	   livenessPeriods periods.

var (
	simVIP   = netip.MustParseAddr("198.18.0.100")
	simKey   = heartbeat.DeriveKey([]byte("simulation cluster key 0123456789"))
	simRules = []filter.PortRule{
		{StartPort: 80, EndPort: 80, Protocol: filter.ProtoTCP, Mode: filter.ModeMultiple, Affinity: filter.AffinityNone},
		{StartPort: 53, EndPort: 53, Protocol: filter.ProtoUDP, Mode: filter.ModeSingle, Affinity: filter.AffinityNone},
	}
	simTables = []int{0, 1, filter.DefaultRule}
)

type simFlow struct {
	table, bucket int
	host          uint8
	end           time.Time
	reset         bool
}

type simHost struct {
	id uint8
	m  *Machine
	// retained is the state the last operator command left (the agent's
	// host.retain_state): a restart begins there (0: as configured).
	retained State
	// voters, agreed in votersEpoch: the recorded voter set (survives
	// restarts and reboots).
	voters, votersEpoch uint64
	conn                *heartbeat.MemConn
	guard               *heartbeat.Guard
	agentUp             bool
	kernelUp            bool
	marks               [filter.MaxRules + 1]filter.Marks
	leaseUntil          time.Time
	nextTick            time.Time
	inc                 uint64
	weight              uint32
	// rate and offset skew the host's clock (skewed runs): its clock
	// advances rate seconds per real second, from offset.
	rate   float64
	offset time.Duration
	// pending is the held-flow scan taken at the last tick; a skewed run
	// sometimes delivers it a tick late (a slow socket dump).
	pending *HeldScan
	// localLoss: the host's own receive path is losing frames (its ticks
	// say so).
	localLoss bool
}

// simEpoch is the simulation's start.
var simEpoch = time.Unix(1_000_000, 0)

// maxRateSkew bounds the clock rate error of a skewed run: ±1 %, twenty
// times what an undisciplined crystal drifts.
const maxRateSkew = 0.01

// clock is host h's own clock.
func (s *sim) clock(h *simHost) time.Time {
	if h.rate == 0 {
		return s.now
	}
	return simEpoch.Add(time.Duration(float64(s.now.Sub(simEpoch))*h.rate) + h.offset)
}

// real converts a duration on h's clock to real time.
func (h *simHost) real(d time.Duration) time.Duration {
	if h.rate == 0 {
		return d
	}
	return time.Duration(float64(d) / h.rate)
}

type sim struct {
	t       testing.TB
	r       *rand.Rand
	now     time.Time
	net     *heartbeat.Network
	hosts   map[uint8]*simHost
	flows   []*simFlow
	cfg     Config // template
	group   map[uint8]int
	changed bool
	// reachFn: can one client reach both hosts (for S1/S2)? Default: same
	// partition group.
	reachFn func(a, b uint8) bool
	// when each pair of hosts last came into one partition group
	together map[[2]uint8]time.Time
	trace    func(format string, args ...any)
	// reincarnations counts Reincarnate actions.
	reincarnations int
	// liar, when not 0, is a member (it holds the cluster key) whose
	// table chunks give it all of rule 0, with heartbeats whose epoch
	// digest matches the lie; lies and refused count them.
	liar          uint8
	lies, refused int

	// skew gives each host its own clock rate and offset, and delivers
	// some held-flow scans a tick late.
	skew bool

	// results
	violations  []string
	synLost     int
	stalls      int
	flowsMade   int
	wireBytes   int64 // bytes sent by all hosts, with Ethernet framing
	countLeaves bool
	leaves      int // "evict" events: a live host declared dead by a peer
	// graceExpired counts flows held by a host whose agent is dead that
	// were reset by a host which lost contact with it more than
	// DeadAfter + Grace ago: the documented limit of the protection.
	graceExpired int
	epochs       int
}

func newSim(t testing.TB, seed uint64) *sim {
	now := time.Unix(1_000_000, 0)
	s := &sim{t: t, r: rand.New(rand.NewPCG(seed, 77)), now: now, net: heartbeat.NewNetwork(seed, now),
		hosts: map[uint8]*simHost{}, group: map[uint8]int{}, together: map[[2]uint8]time.Time{}}
	s.trace = traceOn
	s.cfg = Config{
		ClusterVIP: simVIP, DedicatedIP: netip.MustParseAddr("198.18.0.1"), Rules: simRules,
		ConfigDigest: [16]byte{1}, Timing: heartbeat.Timing{Period: 100 * time.Millisecond, LossTolerance: 10},
		Grace: 10 * time.Second, DrainTimeout: 20 * time.Second, StartState: StateConverging,
	}
	return s
}

func (s *sim) name(id uint8) string { return fmt.Sprintf("h%d", id) }

// formed returns a simulation of hosts 1..n that has converged; voters
// (optional) sets a quorum.
func formed(t testing.TB, seed uint64, n int, voters ...int) *sim {
	t.Helper()
	s := newSim(t, seed)
	if len(voters) > 0 {
		s.cfg.Quorum, s.cfg.QuorumVoters = true, voters[0]
	}
	for id := uint8(1); id <= uint8(n); id++ {
		s.boot(id, false)
	}
	if s.settle(20*time.Second) < 0 {
		s.fail(t, "formation")
	}
	return s
}

// boot starts host id's agent; with restart the kernel (marks, lease) is
// kept, as after an agent crash.
func (s *sim) boot(id uint8, restart bool) {
	h := s.hosts[id]
	if h == nil {
		h = &simHost{id: id, weight: 50, inc: 100} // room below for clock steps
		if s.skew {
			h.rate = 1 + (2*s.r.Float64()-1)*maxRateSkew
			h.offset = time.Duration(s.r.Int64N(int64(2*time.Hour))) - time.Hour
		}
		s.hosts[id] = h
	}
	h.inc++
	cfg := s.cfg
	cfg.HostID, cfg.Incarnation, cfg.Voters, cfg.VotersEpoch = id, h.inc, h.voters, h.votersEpoch
	cfg.Settings = []filter.RuleSetting{{Weight: h.weight, Priority: int(id)}, {Weight: 50, Priority: int(id)}}
	if h.retained != 0 {
		cfg.StartState = h.retained
	}
	h.m = NewMachine(cfg)
	if restart && h.kernelUp {
		var mk [filter.MaxRules + 1]*filter.Marks
		for _, t := range simTables {
			c := h.marks[t]
			mk[t] = &c
		}
		left := time.Duration(float64(h.leaseUntil.Sub(s.now)) * max(h.rate, 1))
		if left < 0 {
			left = 0
		}
		h.m.Restore(s.clock(h), mk, left)
	} else {
		h.marks = [filter.MaxRules + 1]filter.Marks{}
		h.leaseUntil = time.Time{}
	}
	if h.conn != nil {
		h.conn.Close()
	}
	h.conn = s.net.Join(s.name(id))
	h.guard = heartbeat.NewGuard(heartbeat.Keyring{simKey}, simVIP, id)
	h.guard.SetOwnIncarnation(h.inc)
	h.agentUp, h.kernelUp = true, true
	h.nextTick = s.now.Add(time.Duration(s.r.Int64N(int64(s.cfg.Period))))
	h.pending = nil
	s.changed = true
}

func (s *sim) crashAgent(id uint8) {
	h := s.hosts[id]
	h.agentUp = false
	h.conn.Close()
}

func (s *sim) crashHost(id uint8) {
	s.crashAgent(id)
	h := s.hosts[id]
	h.kernelUp = false
	h.marks = [filter.MaxRules + 1]filter.Marks{}
	kept := s.flows[:0]
	for _, f := range s.flows {
		if f.host != id {
			kept = append(kept, f)
		}
	}
	s.flows = kept
	s.changed = true
}

func (s *sim) partition(groups ...[]uint8) {
	var names [][]string
	old := s.group
	s.group = map[uint8]int{}
	for i, g := range groups {
		var ns []string
		for _, id := range g {
			ns = append(ns, s.name(id))
			s.group[id] = i + 1
		}
		names = append(names, ns)
	}
	s.net.Partition(names...)
	s.changed = true
	for _, a := range s.ids() {
		for _, b := range s.ids() {
			if s.group[a] == s.group[b] && old[a] != old[b] {
				s.together[[2]uint8{a, b}] = s.now
			}
		}
	}
}

func (s *sim) apply(h *simHost, acts []Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case Send:
			msg := a.Msg
			if s.liar == h.id {
				msg = s.lie(h, msg)
			}
			b, err := heartbeat.Marshal(msg, &simKey)
			if err != nil {
				s.t.Fatalf("host %d: marshal: %v", h.id, err)
			}
			s.wireBytes += int64(len(b) + 18) // Ethernet header and FCS
			h.conn.Send(b)
		case InstallMarks:
			if s.trace != nil && a.Marks[filter.DefaultRule] != nil && a.Marks[filter.DefaultRule][0] != h.marks[filter.DefaultRule][0] {
				s.trace("%v host %d: default bucket 0 %v -> %v (state %v phase %d)", s.now.Sub(time.Unix(1_000_000, 0)), h.id, h.marks[filter.DefaultRule][0], a.Marks[filter.DefaultRule][0], h.m.State(), h.m.phase)
			}
			for _, t := range simTables {
				if a.Marks[t] != nil {
					h.marks[t] = *a.Marks[t]
				}
			}
			s.changed = true
		case Voters:
			h.voters, h.votersEpoch = a.Set, a.Epoch
		case Reincarnate:
			h.inc = a.Incarnation
			h.guard.SetOwnIncarnation(a.Incarnation)
			s.reincarnations++
		case Lease:
			if a.For == 0 {
				h.leaseUntil = time.Time{}
			} else {
				h.leaseUntil = s.now.Add(h.real(a.For))
			}
		case Notice:
			if a.Kind == NoticeEpoch && strings.HasPrefix(a.Msg, "proposed ") {
				s.epochs++
			}
			if a.Kind == NoticeTablesRefused {
				s.refused++
			}
			if a.Kind == NoticeEvict && s.countLeaves {
				s.leaves++ // no host crashes in runs that count leaves
			}
			if s.trace != nil {
				e := uint64(0)
				if h.m.Epoch() != nil {
					e = h.m.Epoch().Num
				}
				s.trace("%v host %d: %s %d %s (epoch %d members %b)", s.now.Sub(time.Unix(1_000_000, 0)), h.id, a.Kind, a.Host, a.Msg, e, func() uint64 {
					if h.m.Epoch() != nil {
						return h.m.Epoch().Members
					}
					return 0
				}())
			}
		}
	}
}

// lie rewrites what the liar sends: rule 0's table chunks give it every
// bucket, and its heartbeat's epoch digest matches those tables, so that
// only the followers' own checks (verifyTables) can tell.
func (s *sim) lie(h *simHost, msg heartbeat.Message) heartbeat.Message {
	e := h.m.Epoch()
	if e == nil || e.Tables[0] == nil {
		return msg
	}
	switch m := msg.(type) {
	case *heartbeat.TableChunk:
		if m.Table == 0 && m.Epoch == e.Num {
			c := *m
			for i := range c.Owners {
				c.Owners[i] = h.id
			}
			s.lies++
			return &c
		}
	case *heartbeat.Heartbeat:
		if m.Epoch == e.Num {
			tabs := e.Tables
			tabs[0] = filter.Uniform(h.id)
			c := *m
			c.EpochDigest = digestTables(e.Num, e.Members, &tabs, h.m.ntables())
			return &c
		}
	}
	return msg
}

func (s *sim) held(id uint8) HeldScan {
	var hs HeldScan
	for _, f := range s.flows {
		if f.host == id {
			if hs.Held[f.table] == nil {
				hs.Held[f.table] = map[uint16]bool{}
			}
			hs.Held[f.table][uint16(f.bucket)] = true
		}
	}
	return hs
}

func (s *sim) ids() []uint8 {
	var ids []uint8
	for id := uint8(1); id <= filter.MaxHostID; id++ {
		if s.hosts[id] != nil {
			ids = append(ids, id)
		}
	}
	return ids
}

// open: the host's kernel takes new flows in the bucket.
func (s *sim) open(h *simHost, t, b int) bool {
	k := h.marks[t][b]
	return h.kernelUp && (k == filter.MarkOwned || k == filter.MarkDirty) && s.now.Before(h.leaseUntil)
}

// accepts mirrors filter.Decide's handling of a TCP packet by mark.
func (s *sim) accepts(h *simHost, t, b int, syn, holds bool) bool {
	if !h.kernelUp {
		return false
	}
	k, lease := h.marks[t][b], s.now.Before(h.leaseUntil)
	switch {
	case k == filter.MarkNone:
		return false
	case lease && k == filter.MarkOwned:
		return true
	case lease && k == filter.MarkDirty && syn:
		return true
	}
	return !syn && holds
}

// graceOver: holder's agent is dead and acceptor last heard it more than
// DeadAfter + Grace ago (or never).
func (s *sim) graceOver(acceptor *simHost, holder uint8) bool {
	if s.hosts[holder].agentUp || !acceptor.agentUp {
		return false
	}
	p := acceptor.m.peers[holder]
	return p == nil || s.clock(acceptor).Sub(p.lastHeard) >= s.cfg.DeadAfter()+s.cfg.Grace
}

func (s *sim) reach(a, b uint8) bool {
	if s.reachFn != nil {
		return s.reachFn(a, b)
	}
	return s.group[a] == s.group[b]
}

// step advances the simulation by dt.
func (s *sim) step(dt time.Duration) {
	s.now = s.now.Add(dt)
	s.net.Advance(s.now)
	for _, id := range s.ids() {
		h := s.hosts[id]
		if !h.agentUp {
			continue
		}
		for {
			b, ok := h.conn.TryReceive()
			if !ok {
				break
			}
			msg, drop := h.guard.Check(b)
			if drop != heartbeat.DropNone && drop != heartbeat.DropSelf {
				continue
			}
			s.apply(h, h.m.Step(s.clock(h), Received{Msg: msg, SelfID: drop == heartbeat.DropSelf}))
		}
		if !s.now.Before(h.nextTick) {
			h.nextTick = h.nextTick.Add(h.real(s.cfg.Period))
			scan := s.held(id)
			scan.At = s.clock(h)
			if s.skew && h.pending != nil && s.r.IntN(3) == 0 {
				// A slow socket dump: the scan taken a tick ago arrives now.
				scan, h.pending = *h.pending, &scan
			} else {
				h.pending = &scan
			}
			s.apply(h, h.m.Step(s.clock(h), scan))
			s.apply(h, h.m.Step(s.clock(h), Tick{LocalLoss: h.localLoss}))
		}
	}
	s.traffic()
	if s.changed {
		s.checkS1()
		s.changed = false
	}
}

// traffic opens new flows, ends old ones, and sends one packet per flow.
func (s *sim) traffic() {
	kept := s.flows[:0]
	for _, f := range s.flows {
		if s.now.After(f.end) || f.reset {
			continue
		}
		kept = append(kept, f)
		holderOK := false
		for _, id := range s.ids() {
			h := s.hosts[id]
			if !s.reach(id, f.host) {
				continue
			}
			if s.accepts(h, f.table, f.bucket, false, id == f.host) {
				if id == f.host {
					holderOK = true
				} else if s.graceOver(h, f.host) {
					// The documented limit of the protection: this host
					// answers with a RST and the flow is gone.
					s.graceExpired++
					f.reset = true
				} else {
					s.violate("S2: host %d accepts a packet of a flow held by host %d (table %d bucket %d, mark %v)", id, f.host, f.table, f.bucket, h.marks[f.table][f.bucket])
				}
			}
		}
		if !holderOK {
			s.stalls++
		}
	}
	s.flows = kept
	for i := 0; i < 3; i++ {
		t := simTables[s.r.IntN(len(simTables))]
		b := s.r.IntN(filter.Buckets)
		var takers []uint8
		for _, id := range s.ids() {
			if s.accepts(s.hosts[id], t, b, true, false) {
				takers = append(takers, id)
			}
		}
		for x := 0; x < len(takers); x++ {
			for y := x + 1; y < len(takers); y++ {
				if s.reach(takers[x], takers[y]) {
					s.violate("S1: SYN in table %d bucket %d accepted by hosts %d and %d", t, b, takers[x], takers[y])
				}
			}
		}
		if len(takers) == 0 {
			s.synLost++
			continue
		}
		s.flowsMade++
		s.flows = append(s.flows, &simFlow{table: t, bucket: b, host: takers[0],
			end: s.now.Add(time.Duration(200+s.r.IntN(5000)) * time.Millisecond)})
	}
}

func (s *sim) checkS1() {
	ids := s.ids()
	for _, t := range simTables {
		for b := 0; b < filter.Buckets; b++ {
			first := uint8(0)
			for _, id := range ids {
				if !s.open(s.hosts[id], t, b) {
					continue
				}
				if first != 0 && s.reach(first, id) {
					s.violate("S1: table %d bucket %d open on hosts %d and %d", t, b, first, id)
					return
				}
				if first == 0 {
					first = id
				}
			}
		}
	}
}

// checkCounts verifies every machine's per-table mark counts against its
// marks.
func (s *sim) checkCounts() {
	for _, id := range s.ids() {
		m := s.hosts[id].m
		for t := range m.marks {
			var c [4]int
			for _, k := range m.marks[t] {
				c[k]++
			}
			if c != m.count[t] {
				s.t.Fatalf("host %d table %d: counts %v, marks hold %v", id, t, m.count[t], c)
			}
		}
	}
}

func (s *sim) violate(format string, args ...any) {
	if len(s.violations) < 5 {
		s.violations = append(s.violations, fmt.Sprintf("t=%v: ", s.now.Sub(time.Unix(1_000_000, 0)))+fmt.Sprintf(format, args...))
	}
}

func (s *sim) run(d time.Duration) {
	for end := s.now.Add(d); s.now.Before(end); {
		s.step(10 * time.Millisecond)
	}
}

// settled: every live host converged on one epoch, and every bucket of
// every table that has an owner is open (owned, or dirty during a
// handoff's grace) on exactly that one host.
func (s *sim) settled() bool {
	var num uint64
	var up []*simHost
	for _, id := range s.ids() {
		h := s.hosts[id]
		if !h.agentUp {
			continue
		}
		st := h.m.State()
		if st == StateStopped || st == StateSuspended || st == StateRefused {
			continue
		}
		if st != StateConverged && st != StateDefault && st != StateDraining {
			return false
		}
		e := h.m.Epoch()
		if e == nil || num != 0 && e.Num != num {
			return false
		}
		num = e.Num
		up = append(up, h)
	}
	if len(up) == 0 {
		return true
	}
	e := up[0].m.Epoch()
	// Every host's own settings (operator and health overrides included)
	// are those of the epoch: a change not yet heard is not settled.
	for _, h := range up {
		if e.Members&(1<<(h.id-1)) != 0 && !slices.Equal(e.Settings[h.id], ToSettings(h.m.effective(), len(s.cfg.Rules))) {
			return false
		}
	}
	for _, t := range simTables {
		tab := e.Tables[t]
		for b := 0; b < filter.Buckets; b++ {
			owner := uint8(0)
			if tab != nil {
				owner = tab[b]
			}
			for _, h := range up {
				if s.open(h, t, b) != (h.id == owner) {
					if s.trace != nil {
						s.trace("unsettled: host %d table %d bucket %d owner %d mark %v lease %v", h.id, t, b, owner, h.marks[t][b], s.now.Before(h.leaseUntil))
					}
					return false
				}
			}
		}
	}
	return true
}

// settle runs until settled and returns how long it took, or -1.
func (s *sim) settle(limit time.Duration) time.Duration {
	start := s.now
	for s.now.Sub(start) < limit {
		s.run(s.cfg.Period)
		if s.settled() {
			return s.now.Sub(start)
		}
	}
	return -1
}

func (s *sim) fail(t testing.TB, what string) {
	t.Helper()
	for _, v := range s.violations {
		t.Error(v)
	}
	if what != "" {
		var st []string
		for _, id := range s.ids() {
			h := s.hosts[id]
			e := uint64(0)
			if h.m.Epoch() != nil {
				e = h.m.Epoch().Num
			}
			st = append(st, fmt.Sprintf("%d:%v/e%d/p%d/agent=%v", id, h.m.State(), e, h.m.phase, h.agentUp))
		}
		t.Fatalf("%s; hosts %v", what, st)
	}
	if len(s.violations) > 0 {
		t.FailNow()
	}
}

func TestSimFormAndFail(t *testing.T) {
	s := newSim(t, 1)
	for id := uint8(1); id <= 3; id++ {
		s.boot(id, false)
	}
	if d := s.settle(10 * time.Second); d < 0 {
		s.fail(t, "3 hosts did not converge")
	}
	s.run(3 * time.Second)
	s.crashHost(2)
	if d := s.settle(10 * time.Second); d < 0 {
		s.fail(t, "2 hosts did not reconverge after a crash")
	}
	s.boot(2, false)
	if d := s.settle(10 * time.Second); d < 0 {
		s.fail(t, "host 2 did not rejoin")
	}
	s.fail(t, "")
	if s.flowsMade == 0 {
		t.Fatal("no flows")
	}
}

// traceOn, when set (while debugging a seed), receives a line per event.
var traceOn func(format string, args ...any)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// livenessPeriods bounds, in heartbeat periods, the time from a stable
// membership on a clean network to every bucket open on exactly one host.
// It covers failure detection (LossTolerance periods), a rejoining host's
// listening (LossTolerance), and the handoff (about 3), with margin.
const livenessPeriods = 40

// mergePeriods: in availability mode, how long after two sides of a
// partition meet again they may both take new flows in a bucket.
const mergePeriods = 20

// randomScenario drives one seeded history and checks S1, S2 and L.
func randomScenario(t testing.TB, seed uint64, n int, events int) (time.Duration, *sim) {
	return scenario(t, seed, n, events, quorumOff)
}

// quorumMode is how a scenario's cluster treats partitions.
type quorumMode int

const (
	quorumOff     quorumMode = iota // as NLB: both sides serve
	quorumStatic                    // voters 1..n
	quorumDynamic                   // the default: the last agreed members
)

// scenario runs one seeded history. With quorum, hosts 1..n are voters and
// clients reach every host across partitions: S1 and S2 are checked
// between all hosts at all times.
func scenario(t testing.TB, seed uint64, n int, events int, mode quorumMode) (settleTime time.Duration, s *sim) {
	s = newSim(t, seed)
	s.skew = true
	quorum := mode != quorumOff
	s.cfg.Quorum = quorum
	if mode == quorumStatic {
		s.cfg.QuorumVoters = n
	}
	r := s.r
	for id := uint8(1); id <= uint8(n); id++ {
		s.boot(id, false)
	}
	if s.settle(20*time.Second) < 0 {
		s.fail(t, "initial convergence")
	}
	s.reachFn = func(a, b uint8) bool {
		if quorum {
			return true
		}
		if s.group[a] != s.group[b] {
			return false
		}
		// In availability mode both sides of a partition serve; when they
		// meet again, they need a few periods to merge (NLB behaves
		// alike); see docs/architecture.md.
		since, met := s.together[[2]uint8{a, b}]
		return !met || s.now.Sub(since) > mergePeriods*s.cfg.Period
	}
	up := func(pred func(h *simHost) bool) []uint8 {
		var out []uint8
		for _, id := range s.ids() {
			if pred(s.hosts[id]) {
				out = append(out, id)
			}
		}
		return out
	}
	pick := func(ids []uint8) uint8 { return ids[r.IntN(len(ids))] }
	// An attacker without the key records every frame and replays some.
	atk := s.net.Join("attacker")
	var captured [][]byte
	tap := func() {
		for {
			b, ok := atk.TryReceive()
			if !ok {
				return
			}
			if len(captured) < 4096 {
				captured = append(captured, b)
			}
		}
	}
	for e := 0; e < events; e++ {
		tap()
		agents := up(func(h *simHost) bool { return h.agentUp })
		switch r.IntN(14) {
		case 0:
			if len(agents) > 1 {
				s.crashHost(pick(agents))
			}
		case 1:
			if len(agents) > 1 {
				s.crashAgent(pick(agents))
			}
		case 2: // restart a crashed agent (kernel kept) or boot a dead host
			if down := up(func(h *simHost) bool { return !h.agentUp }); len(down) > 0 {
				id := pick(down)
				s.boot(id, s.hosts[id].kernelUp)
			}
		case 3: // a new host joins (not with dynamic voters: a host that
			// never agreed to an epoch and hears nobody, inside a
			// partition, founds a cluster; docs/architecture.md)
			if id := len(s.hosts) + 1; id <= min(n+3, filter.MaxHostID) && mode != quorumDynamic {
				id := uint8(id)
				s.boot(id, false)
			}
		case 4:
			id := pick(agents)
			s.command(id, []Op{OpDrainStop, OpStop, OpSuspend}[r.IntN(3)])
		case 5: // start stopped hosts, resume suspended ones
			for _, id := range agents {
				switch s.hosts[id].m.State() {
				case StateStopped:
					s.command(id, OpStart)
				case StateSuspended:
					s.command(id, OpResume)
				}
			}
		case 6:
			id := pick(agents)
			h := s.hosts[id]
			h.weight = uint32(r.IntN(101))
			s.apply(h, h.m.Step(s.clock(h), Command{Op: OpSetSettings, Settings: []filter.RuleSetting{{Weight: h.weight, Priority: int(id)}, {Weight: 50, Priority: int(id)}}}))
		case 7:
			id := pick(agents)
			op := []Op{OpEnableRule, OpDisableRule, OpDrainRule}[r.IntN(3)]
			s.command(id, op, r.IntN(3)-1)
		case 8:
			s.net.SetLoss(r.Float64()*0.2, r.Float64()*0.05)
			s.net.SetDelay(0, time.Duration(r.IntN(150))*time.Millisecond)
		case 9:
			ids := s.ids()
			var a, b []uint8
			for _, id := range ids {
				if r.IntN(2) == 0 {
					a = append(a, id)
				} else {
					b = append(b, id)
				}
			}
			s.partition(a, b)
		case 10:
			s.partition()
		case 11: // replay a burst of captured frames, old and recent
			for i := 0; i < 50 && len(captured) > 0; i++ {
				atk.Send(captured[r.IntN(len(captured))])
			}
		case 13: // a member starts lying about its tables, or stops
			if s.liar != 0 {
				s.liar = 0
			} else {
				s.liar = pick(agents)
			}
		case 12: // a reboot whose clock stepped back, its record lost
			if len(agents) > 1 {
				id := pick(agents)
				s.crashHost(id)
				s.hosts[id].inc -= 2 + uint64(r.IntN(50)) // boot takes one more: below what peers saw
				s.boot(id, false)
			}
		}
		if s.trace != nil {
			s.trace("%v event %d: groups %v agents %v", s.now.Sub(time.Unix(1_000_000, 0)), e, s.group, agents)
		}
		s.run(time.Duration(300+r.IntN(3000)) * time.Millisecond)
		if len(s.violations) > 0 {
			s.fail(t, fmt.Sprintf("seed %d event %d", seed, e))
		}
	}
	// Stabilise: clean network, one partition, agents of live kernels
	// back, every stopped host started, the liar honest again.
	s.partition()
	s.liar = 0
	s.net.SetLoss(0, 0)
	s.net.SetDelay(0, 0)
	for _, id := range s.ids() {
		h := s.hosts[id]
		// A quorum cluster whose majority is down cannot recover by
		// design: crashed hosts come back too.
		if !h.agentUp && (h.kernelUp || quorum) {
			s.boot(id, h.kernelUp)
		}
		if h.agentUp {
			switch h.m.State() {
			case StateStopped, StateRefused, StateDraining: // a drain's timeout would end its flows
				s.command(id, OpStart)
			case StateSuspended:
				s.command(id, OpResume)
			}
			// A rule every live host drained or disabled is served by
			// nobody, rightly: the operator enables them again.
			s.command(id, OpEnableRule, -1)
		}
	}
	s.checkCounts()
	// Let the commands be heard: a host just started is converged
	// outside the epoch until the leader hears it.
	s.run(3 * s.cfg.Period)
	d := s.settle(livenessPeriods * s.cfg.Period)
	if d < 0 {
		s.fail(t, fmt.Sprintf("seed %d: not settled within %d periods", seed, livenessPeriods))
	}
	// Settled means served: from here no SYN goes unanswered and no held
	// flow stalls.
	lost, stalls := s.synLost, s.stalls
	s.run(3 * time.Second)
	if s.synLost != lost || s.stalls != stalls {
		s.fail(t, fmt.Sprintf("seed %d: settled, yet %d SYNs unserved and %d stalls in the next 3 s", seed, s.synLost-lost, s.stalls-stalls))
	}
	if len(s.violations) > 0 {
		s.fail(t, fmt.Sprintf("seed %d", seed))
	}
	return d, s
}

// mutateSubset is set by the mutate build tag (make mutate): a fast,
// deterministic subset of the simulations.
var mutateSubset = false

// simSeeds is how many histories to run: n, or short with -short, 2 under
// make mutate, or NLB_SIM_SEEDS when set (`make soak`).
func simSeeds(n, short int) int {
	if v, err := strconv.Atoi(os.Getenv("NLB_SIM_SEEDS")); err == nil && v > 0 {
		return v
	}
	if mutateSubset {
		return 2
	}
	if testing.Short() {
		return short
	}
	return n
}

// TestSimRandom runs 30 seeded histories (6 with -short; NLB_SIM_SEEDS
// sets another number, as `make soak` does).
func TestSimRandom(t *testing.T) {
	seeds := simSeeds(30, 6)
	var worst time.Duration
	for seed := uint64(0); seed < uint64(seeds); seed++ {
		n := 2 + int(seed%7)
		d, s := randomScenario(t, seed, n, 12)
		if d > worst {
			worst = d
		}
		if t.Failed() {
			return
		}
		t.Logf("seed %d (n=%d): %d flows, %d SYNs unserved, %d stalls, %d epochs, %d flows reset past the grace, %d reincarnations after clock steps, %d lying chunks, %d epochs refused, settled in %v",
			seed, n, s.flowsMade, s.synLost, s.stalls, s.epochs, s.graceExpired, s.reincarnations, s.lies, s.refused, d)
	}
	t.Logf("worst time to settle after the last disturbance: %v (bound %d periods)", worst, livenessPeriods)
}

// TestSimQuorum runs seeded histories with a quorum of voters: here both
// sides of a partition are reachable by clients, and S1/S2 must hold
// across them at every step.
func TestSimQuorum(t *testing.T) {
	seeds := simSeeds(20, 4)
	for seed := uint64(0); seed < uint64(seeds); seed++ {
		n := 3 + int(seed%5)
		d, s := scenario(t, 500+seed, n, 12, quorumStatic)
		if t.Failed() {
			return
		}
		t.Logf("seed %d (n=%d, quorum %d): %d flows, %d SYNs unserved, %d epochs, %d flows reset past the grace, settled in %v",
			seed, n, n, s.flowsMade, s.synLost, s.epochs, s.graceExpired, d)
	}
}

// TestSimQuorumDynamic runs seeded histories with the default quorum: the
// voters are the members of the last agreed epoch, recorded across
// restarts and reboots. Clients reach both sides of every partition: S1
// and S2 hold between all hosts at all times.
func TestSimQuorumDynamic(t *testing.T) {
	seeds := simSeeds(20, 4)
	for seed := uint64(0); seed < uint64(seeds); seed++ {
		n := 2 + int(seed%6)
		d, s := scenario(t, 700+seed, n, 12, quorumDynamic)
		if t.Failed() {
			return
		}
		t.Logf("seed %d (n=%d, dynamic quorum): %d flows, %d SYNs unserved, %d epochs, %d flows reset past the grace, settled in %v",
			seed, n, s.flowsMade, s.synLost, s.epochs, s.graceExpired, d)
	}
}

// TestSimLarge runs shorter histories on 16, 32 and 64 hosts.
func TestSimLarge(t *testing.T) {
	sizes := []int{16, 32, 64}
	if testing.Short() || mutateSubset {
		sizes = []int{16}
	}
	for _, n := range sizes {
		d, s := randomScenario(t, uint64(1000+n), n, 4)
		if t.Failed() {
			return
		}
		t.Logf("n=%d: %d flows, %d epochs, %d stalls, %d flows reset past the grace, settled in %v",
			n, s.flowsMade, s.epochs, s.stalls, s.graceExpired, d)
	}
}
