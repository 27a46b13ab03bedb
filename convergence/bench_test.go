package convergence

import (
	"fmt"
	"math"
	"sort"
	"testing"
	"time"
)

// failoverOnce forms an n-host cluster, crashes one host at a random
// moment and returns the time until every bucket it owned is open on
// another host.
func failoverOnce(b *testing.B, seed uint64, n, voters int) time.Duration {
	s := formed(b, seed, n, voters)
	s.run(time.Duration(s.r.Int64N(int64(2 * time.Second))))
	victim := uint8(1 + s.r.IntN(n))
	e := s.hosts[victim%uint8(n)+1].m.Epoch()
	var owned [][2]int
	for _, t := range simTables {
		if tab := e.Tables[t]; tab != nil {
			for bk := range tab {
				if tab[bk] == victim {
					owned = append(owned, [2]int{t, bk})
				}
			}
		}
	}
	s.crashHost(victim)
	start := s.now
	for s.now.Sub(start) < 30*time.Second {
		s.step(10 * time.Millisecond)
		done := true
		for _, tb := range owned {
			open := false
			for _, id := range s.ids() {
				if id != victim && s.open(s.hosts[id], tb[0], tb[1]) {
					open = true
					break
				}
			}
			if !open {
				done = false
				break
			}
		}
		if done {
			if len(s.violations) > 0 {
				s.fail(b, "violation during failover")
			}
			return s.now.Sub(start)
		}
	}
	b.Fatalf("seed %d: buckets of host %d not taken over in 30s", seed, victim)
	return 0
}

// BenchmarkFailover reports, at default settings (100 ms × 10), the time
// from a host crash to all its buckets owned again (mean and p99 over the
// trials; failure detection is 1 s of it), and false evictions over a
// long run with 10 % heartbeat loss and jittered delivery.
func BenchmarkFailover(b *testing.B) {
	for _, c := range []struct {
		name      string
		n, voters int
	}{{"crash/N=3", 3, 0}, {"crash/N=8", 8, 0}, {"crash-quorum/N=3", 3, 3}, {"crash-quorum/N=8", 8, 8}} {
		b.Run(c.name, func(b *testing.B) {
			var ds []float64
			for i := 0; i < b.N; i++ {
				ds = append(ds, float64(failoverOnce(b, uint64(i), c.n, c.voters).Milliseconds()))
			}
			sort.Float64s(ds)
			sum := 0.0
			for _, d := range ds {
				sum += d
			}
			b.ReportMetric(sum/float64(len(ds)), "failover-ms")
			b.ReportMetric(ds[int(math.Ceil(0.99*float64(len(ds))))-1], "failover-p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
	b.Run("loss10/N=8", func(b *testing.B) {
		evictions, epochs := 0, 0
		simulated := 0 * time.Second
		for i := 0; i < b.N; i++ {
			s := formed(b, uint64(100+i), 8)
			s.net.SetLoss(0.10, 0.01)
			s.net.SetDelay(0, 100*time.Millisecond)
			s.countLeaves = true
			before := s.epochs
			s.run(10 * time.Minute)
			simulated += 10 * time.Minute
			evictions += s.leaves
			epochs += s.epochs - before
			if len(s.violations) > 0 {
				s.fail(b, "violation under loss")
			}
		}
		b.ReportMetric(float64(evictions), "false-evictions")
		b.ReportMetric(float64(epochs), "epochs")
		b.ReportMetric(simulated.Minutes(), "simulated-min")
		b.ReportMetric(0, "ns/op")
	})
}

// BenchmarkHeartbeatBandwidth measures, for a converged cluster of 32 and
// of 64 hosts with 2 port rules at default settings, the heartbeat bytes
// each host sends per second and receives per second (all others'
// frames), with Ethernet framing (header and FCS; no preamble or gap).
func BenchmarkHeartbeatBandwidth(b *testing.B) {
	for _, n := range []int{32, 64} {
		b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s := formed(b, uint64(i), n)
				s.run(2 * time.Second)
				before := s.wireBytes
				const window = 10 * time.Second
				s.run(window)
				perHost := float64(s.wireBytes-before) / window.Seconds() / float64(n)
				b.ReportMetric(perHost, "B/s-sent-per-host")
				b.ReportMetric(perHost*float64(n-1), "B/s-received-per-host")
				b.ReportMetric(0, "ns/op")
			}
		})
	}
}
