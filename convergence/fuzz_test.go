package convergence

import (
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

// FuzzMachineHostile feeds a host's machine frames a key holder could
// sign (any host ID, state, incarnation, epoch, view, phase, members,
// settings and table contents), between ticks: it must not panic, its
// mark counts must match its marks, and its state must stay valid.
func FuzzMachineHostile(f *testing.F) {
	f.Add(uint8(2), uint8(4), uint64(5), uint64(9), uint64(3), uint64(3), uint8(2), []byte{50, 2, 0, 50, 2, 0}, []byte{1, 2, 3}, false)
	f.Add(uint8(1), uint8(3), ^uint64(0), uint64(1), ^uint64(0), uint64(7), uint8(1), []byte{}, []byte{9}, true)
	f.Add(uint8(64), uint8(6), uint64(1), uint64(0), uint64(1), uint64(1)<<63, uint8(9), []byte{255, 255, 255}, []byte{}, true)
	f.Fuzz(func(t *testing.T, id, state uint8, inc, epoch, view, members uint64, phase uint8, rules, owners []byte, chunk bool) {
		if id == 0 || id > filter.MaxHostID {
			return
		}
		cfg := Config{HostID: 1, Incarnation: 10, ClusterVIP: simVIP, Rules: simRules, ConfigDigest: [16]byte{1},
			Settings: []filter.RuleSetting{{Weight: 50, Priority: 1}, {Weight: 50, Priority: 1}},
			Timing:   heartbeat.Timing{Period: 100 * time.Millisecond, LossTolerance: 10}, Grace: time.Second, StartState: StateConverging}
		m := NewMachine(cfg)
		guard := heartbeat.NewGuard(heartbeat.Keyring{simKey}, simVIP, 1)
		now := time.Unix(1_000_000, 0)
		step := func(ev Event) {
			m.Step(now, ev)
			now = now.Add(10 * time.Millisecond)
		}
		for i := 0; i < 12; i++ {
			step(Tick{})
		}
		var msg heartbeat.Message
		if chunk {
			c := &heartbeat.TableChunk{ClusterVIP: simVIP, HostID: id, Incarnation: inc, Seq: 1, Epoch: epoch,
				Table: phase % 40, Chunk: state % 5}
			for i := range c.Owners {
				if len(owners) > 0 {
					c.Owners[i] = owners[i%len(owners)]
				}
			}
			msg = c
		} else {
			h := &heartbeat.Heartbeat{ClusterVIP: simVIP, HostID: id, State: state, Incarnation: inc, Seq: 1,
				ConfigDigest: [16]byte{1}, View: view, Epoch: epoch, Phase: phase, Members: members, Retaining: view ^ members,
				DedicatedIP: simVIP}
			copy(h.EpochDigest[:], owners)
			for i := 0; i+2 < len(rules) && len(h.Rules) < heartbeat.MaxRules; i += 3 {
				h.Rules = append(h.Rules, heartbeat.RuleSetting{Weight: rules[i], Priority: rules[i+1], Flags: rules[i+2]})
			}
			msg = h
		}
		b, err := heartbeat.Marshal(msg, &simKey)
		if err != nil {
			return
		}
		for i := 0; i < 3; i++ {
			if got, drop := guard.Check(b); drop == heartbeat.DropNone || drop == heartbeat.DropSelf {
				step(Received{Msg: got, SelfID: drop == heartbeat.DropSelf})
			}
			step(Tick{})
			step(HeldScan{At: now})
		}
		for tb := range m.marks {
			var c [4]int
			for _, k := range m.marks[tb] {
				c[k&3]++
			}
			if c != m.count[tb] {
				t.Fatalf("table %d: counts %v, marks hold %v", tb, m.count[tb], c)
			}
		}
		if s := m.State(); s < StateStopped || s > StateRefused {
			t.Fatalf("state %v", s)
		}
	})
}
