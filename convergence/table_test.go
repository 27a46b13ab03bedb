package convergence

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"
)

// optimalMoves is the fewest buckets that must change owner to go from prev
// to any table in which every host owns within less than one bucket of its
// weighted share (floor(share), or floor(share)+1 when share is not whole):
// every bucket of a departed host, plus each host's excess over its quota,
// where the R = Σ frac(share) remainder +1s are best spent on hosts with a
// fractional share that hold more than their floor. It is derived
// independently of Rebalance.
func optimalMoves(prev *filter.Table, weights map[uint8]uint32) int {
	var total uint64
	for _, w := range weights {
		total += uint64(w)
	}
	if total == 0 {
		n := 0
		for _, o := range prev {
			if o != 0 {
				n++
			}
		}
		return n
	}
	cur := prev.Counts()
	departed, excess, over, rem := 0, 0, 0, filter.Buckets
	for id := 1; id <= filter.MaxHostID; id++ {
		w := weights[uint8(id)]
		if w == 0 {
			departed += cur[id]
			continue
		}
		share := uint64(filter.Buckets) * uint64(w)
		f := int(share / total)
		rem -= f
		if cur[id] > f {
			excess += cur[id] - f
			if share%total != 0 {
				over++
			}
		}
	}
	departed += cur[0]
	return departed + excess - min(rem, over)
}

func moved(a, b *filter.Table) int {
	n := 0
	for i := range a {
		if a[i] != b[i] {
			n++
		}
	}
	return n
}

// maxDeviation is the largest |owned − weighted share| over all hosts.
func maxDeviation(t *filter.Table, weights map[uint8]uint32) float64 {
	var total uint64
	for _, w := range weights {
		total += uint64(w)
	}
	c := t.Counts()
	dev := 0.0
	for id, w := range weights {
		share := float64(filter.Buckets) * float64(w) / float64(total)
		dev = math.Max(dev, math.Abs(float64(c[id])-share))
	}
	return dev
}

func equalWeights(ids ...uint8) map[uint8]uint32 {
	w := map[uint8]uint32{}
	for _, id := range ids {
		w[id] = 50
	}
	return w
}

func seq(from, to int) []uint8 {
	var ids []uint8
	for i := from; i <= to; i++ {
		ids = append(ids, uint8(i))
	}
	return ids
}

func checkTable(t *testing.T, prev, next *filter.Table, w map[uint8]uint32) {
	t.Helper()
	if dev := maxDeviation(next, w); dev >= 1 {
		t.Fatalf("balance: deviation %.3f buckets (weights %v)", dev, w)
	}
	for b, owner := range next {
		if owner != 0 && w[owner] == 0 {
			t.Fatalf("bucket %d owned by host %d, which has weight 0 or left", b, owner)
		}
	}
	if prev != nil {
		if m, opt := moved(prev, next), optimalMoves(prev, w); m != opt {
			t.Fatalf("moved %d buckets, optimal %d (weights %v)", m, opt, w)
		}
	}
}

func TestRebalanceFirstTable(t *testing.T) {
	for n := 1; n <= filter.MaxHostID; n++ {
		w := equalWeights(seq(1, n)...)
		checkTable(t, nil, Rebalance(nil, w), w)
	}
}

func TestRebalanceNoWeights(t *testing.T) {
	tab := Rebalance(nil, map[uint8]uint32{1: 0, 2: 0})
	if c := tab.Counts(); c[0] != filter.Buckets {
		t.Fatalf("all weights 0: %d buckets have an owner", filter.Buckets-c[0])
	}
}

func TestRebalanceStable(t *testing.T) {
	w := map[uint8]uint32{1: 10, 2: 30, 5: 60}
	a := Rebalance(nil, w)
	if b := Rebalance(a, w); moved(a, b) != 0 {
		t.Fatalf("rebalancing with unchanged inputs moved %d buckets", moved(a, b))
	}
}

// TestRebalanceOrderIndependent: the table is a function of the inputs, not
// of map iteration order (Go randomises it on every range).
func TestRebalanceOrderIndependent(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	prev := Rebalance(nil, equalWeights(seq(1, 20)...))
	for i := 0; i < 50; i++ {
		w := map[uint8]uint32{}
		for _, id := range seq(1, 40) {
			if r.IntN(2) == 0 {
				w[id] = uint32(r.IntN(101))
			}
		}
		first := Rebalance(prev, w)
		for j := 0; j < 5; j++ {
			copyW := map[uint8]uint32{}
			for k, v := range w {
				copyW[k] = v
			}
			if again := Rebalance(prev, copyW); *again != *first {
				t.Fatalf("same inputs gave different tables")
			}
		}
	}
}

// TestRebalanceProperties walks random histories of joins, leaves and
// weight changes (including weight 0) and checks balance and minimal
// disruption at every step.
func TestRebalanceProperties(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		r := rand.New(rand.NewPCG(seed, 99))
		w := equalWeights(seq(1, 1+r.IntN(8))...)
		tab := Rebalance(nil, w)
		checkTable(t, nil, tab, w)
		for step := 0; step < 60; step++ {
			next := map[uint8]uint32{}
			for k, v := range w {
				next[k] = v
			}
			id := uint8(1 + r.IntN(filter.MaxHostID))
			switch r.IntN(4) {
			case 0: // join or leave
				if _, ok := next[id]; ok && len(next) > 1 {
					delete(next, id)
				} else {
					next[id] = uint32(1 + r.IntN(100))
				}
			case 1: // weight change, sometimes to 0
				ks := slices.Sorted(maps.Keys(next))
				next[ks[r.IntN(len(ks))]] = uint32(r.IntN(101))
			case 2: // several at once (a partition heals)
				for i := 0; i < 1+r.IntN(5); i++ {
					next[uint8(1+r.IntN(filter.MaxHostID))] = 50
				}
			case 3:
				// Keys in sorted order: a failure replays from its seed.
				for _, k := range slices.Sorted(maps.Keys(next)) {
					if len(next) > 1 && r.IntN(3) == 0 {
						delete(next, k)
					}
				}
			}
			nt := Rebalance(tab, next)
			var total uint64
			for _, v := range next {
				total += uint64(v)
			}
			if total == 0 {
				continue
			}
			checkTable(t, tab, nt, next)
			tab, w = nt, next
		}
	}
}

// history builds the table of hosts 1..n the way a cluster reaches it: one
// join at a time.
func history(n int, weight func(uint8) uint32) (*filter.Table, map[uint8]uint32) {
	w := map[uint8]uint32{}
	var tab *filter.Table
	for _, id := range seq(1, n) {
		w[id] = weight(id)
		tab = Rebalance(tab, w)
	}
	return tab, w
}

// BenchmarkBucketTable reports, for each cluster size and event, the build
// time (ns/op), the balance (dev-buckets: largest |owned − weighted share|)
// and the disruption (moved/optimal).
func BenchmarkBucketTable(b *testing.B) {
	weightings := map[string]func(uint8) uint32{
		"equal":    func(uint8) uint32 { return 50 },
		"weighted": func(id uint8) uint32 { return uint32(id*37%100) + 1 },
	}
	for _, n := range []int{2, 8, 32, 64} {
		for _, event := range []string{"join", "leave"} {
			for _, wname := range []string{"equal", "weighted"} {
				name := fmt.Sprintf("N=%d/event=%s/weights=%s", n, event, wname)
				b.Run(name, func(b *testing.B) {
					var prev *filter.Table
					var next map[uint8]uint32
					if event == "join" {
						// n hosts after the join; host n joins the other n-1.
						// At N=64 the joiner is host 64 (the largest ID).
						var w map[uint8]uint32
						prev, w = history(n-1, weightings[wname])
						next = map[uint8]uint32{uint8(n): weightings[wname](uint8(n))}
						for k, v := range w {
							next[k] = v
						}
					} else {
						var w map[uint8]uint32
						prev, w = history(n, weightings[wname])
						next = map[uint8]uint32{}
						for k, v := range w {
							if k != uint8(n/2+1) {
								next[k] = v
							}
						}
					}
					var out *filter.Table
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						out = Rebalance(prev, next)
					}
					b.StopTimer()
					opt := optimalMoves(prev, next)
					b.ReportMetric(maxDeviation(out, next), "dev-buckets")
					b.ReportMetric(float64(moved(prev, out))/float64(opt), "moved/optimal")
				})
			}
		}
	}
	b.Run("N=64/event=weight0", func(b *testing.B) {
		prev, w := history(64, func(uint8) uint32 { return 50 })
		next := map[uint8]uint32{}
		for k, v := range w {
			next[k] = v
		}
		next[10] = 0
		var out *filter.Table
		for i := 0; i < b.N; i++ {
			out = Rebalance(prev, next)
		}
		b.ReportMetric(maxDeviation(out, next), "dev-buckets")
		b.ReportMetric(float64(moved(prev, out))/float64(optimalMoves(prev, next)), "moved/optimal")
	})
}

// TestPriorityConflicts: hosts sharing a single-host rule's priority are
// found (multiple-host rules and hosts out of the rule are not).
func TestPriorityConflicts(t *testing.T) {
	rules := []filter.PortRule{{Mode: filter.ModeMultiple}, {Mode: filter.ModeSingle}, {Mode: filter.ModeSingle}}
	s := func(p1, p2 int) []filter.RuleSetting {
		return []filter.RuleSetting{{Weight: 50, Priority: 1}, {Priority: p1}, {Priority: p2}}
	}
	got := PriorityConflicts(rules, map[uint8][]filter.RuleSetting{1: s(1, 1), 2: s(2, 0), 3: s(2, 0), 4: s(3, 0)})
	want := []PriorityConflict{{Rule: 1, Priority: 2, Hosts: []uint8{2, 3}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestPriorityConflictReported: when a host takes another's priority for
// a single-host rule, every host reports the conflict in the next epoch.
func TestPriorityConflictReported(t *testing.T) {
	s := formed(t, 31, 3)
	h := s.hosts[3]
	s.apply(h, h.m.Step(s.clock(h), Command{Op: OpSetSettings, Settings: []filter.RuleSetting{{Weight: 50, Priority: 3}, {Weight: 50, Priority: 2}}}))
	s.changed = true
	if s.settle(10*time.Second) < 0 {
		s.fail(t, "no settle after the settings change")
	}
	for id := uint8(1); id <= 3; id++ {
		pc := s.hosts[id].m.PriorityConflicts()
		if len(pc) != 1 || pc[0].Rule != 1 || pc[0].Priority != 2 || !reflect.DeepEqual(pc[0].Hosts, []uint8{2, 3}) {
			t.Errorf("host %d: conflicts %+v", id, pc)
		}
	}
}
