package convergence

import (
	"strings"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

func eventsOf(acts []Action, kind NoticeKind) []Notice {
	var out []Notice
	for _, a := range acts {
		if e, ok := a.(Notice); ok && e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// TestAdmissionConfigMismatch: a host whose cluster settings differ is
// refused, reported once, and the cluster keeps serving undisturbed.
func TestAdmissionConfigMismatch(t *testing.T) {
	s := formed(t, 3, 3)
	epoch := s.hosts[1].m.Epoch().Num
	// Host 4 joins with another config digest.
	s.cfg.ConfigDigest = [16]byte{9}
	s.boot(4, false)
	s.cfg.ConfigDigest = [16]byte{1}
	s.run(3 * time.Second)
	if st := s.hosts[4].m.State(); st != StateRefused {
		t.Fatalf("mismatched host is %v, want refused", st)
	}
	for _, id := range []uint8{1, 2, 3} {
		h := s.hosts[id]
		if e := h.m.Epoch(); e.Num != epoch || e.Members&(1<<3) != 0 {
			t.Fatalf("host %d: epoch %d members %b after a mismatched host appeared (was %d)", id, e.Num, e.Members, epoch)
		}
		if st := h.m.State(); st != StateConverged && st != StateDefault {
			t.Fatalf("host %d disturbed: %v", id, st)
		}
		p := h.m.peers[4]
		if p == nil || p.refused != "config mismatch" {
			t.Fatalf("host %d did not refuse host 4: %+v", id, p)
		}
	}
	if len(s.violations) > 0 {
		s.fail(t, "")
	}
	// When the cluster with the other settings is gone, it joins (a rolling
	// configuration change).
	for id := uint8(1); id <= 3; id++ {
		s.crashHost(id)
	}
	s.run(5 * time.Second)
	if st := s.hosts[4].m.State(); st != StateConverged && st != StateDefault {
		t.Fatalf("mismatched host stays %v after the old cluster left", st)
	}
	// The refusal is an event, reported once per host.
	m := NewMachine(s.hosts[1].m.cfg)
	hb := &heartbeat.Heartbeat{ClusterVIP: simVIP, HostID: 9, ConfigDigest: [16]byte{9}, State: uint8(StateConverged)}
	now := time.Unix(0, 0)
	if ev := eventsOf(m.Step(now, Received{Msg: hb}), "refused"); len(ev) != 1 || ev[0].Host != 9 || !strings.Contains(ev[0].Msg, "differ") {
		t.Fatalf("refusal events %v", ev)
	}
	if ev := eventsOf(m.Step(now, Received{Msg: hb}), "refused"); len(ev) != 0 {
		t.Fatalf("refusal reported again: %v", ev)
	}
}

// TestDuplicateHostID: a host that starts with a live host's ID hears it
// while listening, refuses to join and never speaks; the cluster is not
// disturbed.
// TestDuplicateHostID: a second host 2 (another machine, a later start)
// hears the peers report host 2: it stays silent, is refused, and the
// cluster is undisturbed. When the first host 2 goes away, the refusal
// lifts by itself and the second one joins.
func TestDuplicateHostID(t *testing.T) {
	s := formed(t, 4, 3)
	epoch := s.hosts[1].m.Epoch().Num
	cfg := s.cfg
	cfg.HostID, cfg.Incarnation = 2, 999
	cfg.Settings = []filter.RuleSetting{{Weight: 50, Priority: 2}, {Weight: 50, Priority: 2}}
	dup := NewMachine(cfg)
	conn := s.net.Join("dup2")
	guard := heartbeat.NewGuard(heartbeat.Keyring{simKey}, simVIP, 2)
	guard.SetOwnIncarnation(999)
	var sent int
	var refused bool
	next := s.now
	run := func(d time.Duration) {
		for end := s.now.Add(d); s.now.Before(end); {
			s.step(10 * time.Millisecond)
			var acts []Action
			for {
				b, ok := conn.TryReceive()
				if !ok {
					break
				}
				msg, drop := guard.Check(b)
				if drop != heartbeat.DropNone && drop != heartbeat.DropSelf {
					continue
				}
				acts = append(acts, dup.Step(s.now, Received{Msg: msg, SelfID: drop == heartbeat.DropSelf})...)
			}
			if !s.now.Before(next) {
				next = next.Add(s.cfg.Period)
				acts = append(acts, dup.Step(s.now, Tick{})...)
			}
			for _, a := range acts {
				switch a := a.(type) {
				case Notice:
					refused = refused || a.Kind == NoticeDuplicateID
				case Send:
					sent++
					b, _ := heartbeat.Marshal(a.Msg, &simKey)
					conn.Send(b)
				}
			}
		}
	}
	run(3 * time.Second)
	if !refused || dup.State() != StateRefused || sent != 0 {
		t.Fatalf("duplicate: refused event %v, state %v, sent %d frames", refused, dup.State(), sent)
	}
	for id := uint8(1); id <= 3; id++ {
		if e := s.hosts[id].m.Epoch(); e.Num != epoch {
			t.Fatalf("host %d: epoch changed %d -> %d", id, epoch, e.Num)
		}
	}
	// The first host 2 goes away: the second is no longer refused, speaks,
	// and becomes a member.
	s.crashHost(2)
	run(8 * time.Second)
	if st := dup.State(); st != StateConverged && st != StateDefault || sent == 0 {
		t.Fatalf("after the first host 2 left: state %v, sent %d", st, sent)
	}
	if e := s.hosts[1].m.Epoch(); e.Members&0b10 == 0 {
		t.Fatalf("the second host 2 is not a member: %b", e.Members)
	}
}

// TestSuspendResume: suspend closes everything and ignores start; resume
// rejoins.
func TestSuspendResume(t *testing.T) {
	s := formed(t, 5, 2)
	h := s.hosts[2]
	s.apply(h, h.m.Step(s.now, Command{Op: OpSuspend}))
	if h.m.State() != StateSuspended {
		t.Fatalf("state %v after suspend", h.m.State())
	}
	for _, tb := range simTables {
		for b := 0; b < filter.Buckets; b++ {
			if h.marks[tb][b] != filter.MarkNone {
				t.Fatalf("suspended host keeps mark %v in table %d", h.marks[tb][b], tb)
			}
		}
	}
	s.apply(h, h.m.Step(s.now, Command{Op: OpStart}))
	if h.m.State() != StateSuspended {
		t.Fatalf("start left suspended: %v", h.m.State())
	}
	if s.settle(10*time.Second) < 0 || s.hosts[1].m.Epoch().Members != 1 {
		s.fail(t, "cluster did not settle without the suspended host")
	}
	s.apply(h, h.m.Step(s.now, Command{Op: OpResume}))
	if d := s.settle(10 * time.Second); d < 0 || s.hosts[1].m.Epoch().Members != 0b11 {
		s.fail(t, "resumed host did not rejoin")
	}
	if len(s.violations) > 0 {
		s.fail(t, "")
	}
}

// TestDrainRule: draining one rule on a host moves that rule's buckets
// away and leaves its other rules alone.
func TestDrainRule(t *testing.T) {
	s := formed(t, 7, 3)
	h := s.hosts[3]
	before := s.hosts[1].m.Epoch().Tables[filter.DefaultRule]
	s.apply(h, h.m.Step(s.now, Command{Op: OpDrainRule, Rule: 0}))
	if s.settle(10*time.Second) < 0 {
		s.fail(t, "after drain")
	}
	e := s.hosts[1].m.Epoch()
	if c := e.Tables[0].Counts(); c[3] != 0 || c[1]+c[2] != filter.Buckets {
		t.Fatalf("rule 0 after drain on host 3: counts %v", c[:4])
	}
	if *e.Tables[filter.DefaultRule] != *before {
		t.Fatal("draining rule 0 changed the default table")
	}
	s.apply(h, h.m.Step(s.now, Command{Op: OpEnableRule, Rule: 0}))
	if s.settle(10*time.Second) < 0 {
		s.fail(t, "after enable")
	}
	if c := s.hosts[1].m.Epoch().Tables[0].Counts(); c[3] < filter.Buckets/3-1 {
		t.Fatalf("rule 0 after enable: host 3 owns %d", c[3])
	}
	if len(s.violations) > 0 {
		s.fail(t, "")
	}
}

// TestHealthDrain: a failing health check drains the rule on its host as
// an operator's drain would; the operator's enable does not override it,
// a recovering check does not undo the operator's disable, and the rule
// comes back once both allow it.
func TestHealthDrain(t *testing.T) {
	s := formed(t, 6, 3)
	h := s.hosts[3]
	owned := func(what string, want func(n int) bool) {
		t.Helper()
		if s.settle(10*time.Second) < 0 {
			s.fail(t, what)
		}
		if n := s.hosts[1].m.Epoch().Tables[0].Counts()[3]; !want(n) {
			t.Fatalf("%s: host 3 owns %d buckets of rule 0", what, n)
		}
	}
	none := func(n int) bool { return n == 0 }
	share := func(n int) bool { return n >= filter.Buckets/3-1 }
	s.apply(h, h.m.Step(s.now, Command{Op: OpHealthDown, Rule: 0}))
	owned("health down", none)
	s.apply(h, h.m.Step(s.now, Command{Op: OpEnableRule, Rule: 0}))
	owned("operator enable while health down", none)
	s.apply(h, h.m.Step(s.now, Command{Op: OpDisableRule, Rule: 0}))
	s.apply(h, h.m.Step(s.now, Command{Op: OpHealthUp, Rule: 0}))
	owned("health up while disabled", none)
	s.apply(h, h.m.Step(s.now, Command{Op: OpEnableRule, Rule: 0}))
	owned("enabled and healthy", share)
	if len(s.violations) > 0 {
		s.fail(t, "")
	}
}

// TestRestartExpiredLeaseClosesFirst: an agent restarted after its lease
// ran out (its buckets belong to others by now) installs its closed marks
// before it renews the lease: the other order would let its kernel take a
// SYN, for an instant, in buckets another host owns. (Found by
// TestDeadAgent's SYN-ACK capture: one SYN answered by two hosts.)
func TestRestartExpiredLeaseClosesFirst(t *testing.T) {
	s := formed(t, 8, 3)
	s.crashAgent(3)
	s.run(3 * time.Second) // past the lease and the eviction
	if s.settle(10*time.Second) < 0 {
		s.fail(t, "after the crash")
	}
	h := s.hosts[3]
	owned := 0
	for _, k := range h.marks[0] {
		if k == filter.MarkOwned || k == filter.MarkDirty {
			owned++
		}
	}
	if owned == 0 || s.now.Before(h.leaseUntil) {
		t.Fatalf("test bug: host 3's kernel holds %d open buckets, lease until %v (now %v)", owned, h.leaseUntil, s.now)
	}
	s.boot(3, true)
	acts := h.m.Step(s.now, Tick{})
	closed := -1
	for i, a := range acts {
		switch a := a.(type) {
		case InstallMarks:
			for b, k := range a.Marks[0] {
				if k == filter.MarkOwned || k == filter.MarkDirty {
					t.Fatalf("restart installs bucket %d as %v", b, k)
				}
			}
			closed = i
		case Lease:
			if a.For > 0 && closed < 0 {
				t.Fatalf("lease renewed (action %d) before the closed marks were installed: %T", i, acts)
			}
		}
	}
	if closed < 0 {
		t.Fatal("restart installed no marks")
	}
	s.apply(h, acts)
	if s.settle(10*time.Second) < 0 {
		s.fail(t, "after the restart")
	}
	if len(s.violations) > 0 {
		s.fail(t, "")
	}
}
