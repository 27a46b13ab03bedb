//go:build linux

package bench

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

var all3 = []uint8{1, 2, 3}

// httpLoad runs workers that each open a connection, make one HTTP/1.0
// request and close, for d, against dst (VIP or a host's IP) from every
// client address. It returns requests/s and the p50/p99 latency.
func httpLoad(b *testing.B, c *cluster.Cluster, dst netip.Addr, workers int, d time.Duration) (rps float64, p50, p99 time.Duration, failed int64) {
	var mu sync.Mutex
	var lat []time.Duration
	var fails atomic.Int64
	var wg sync.WaitGroup
	stop := time.Now().Add(d)
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.Clients[w%len(c.Clients)]
			var mine []time.Duration
			for i := 0; time.Now().Before(stop); i++ {
				t0 := time.Now()
				conn, err := cl.DialTo(cl.IPs[(w+i)%len(cl.IPs)], netip.AddrPortFrom(dst, cluster.PortHTTP), 3*time.Second)
				if err == nil {
					_, err = cluster.HTTPHost(conn, 3*time.Second)
					conn.Close()
				}
				if err != nil {
					fails.Add(1)
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	el := time.Since(start)
	slices.Sort(lat)
	if len(lat) == 0 {
		b.Fatalf("no request to %v succeeded (%d failed)", dst, fails.Load())
	}
	return float64(len(lat)) / el.Seconds(), lat[len(lat)/2], lat[len(lat)*99/100], fails.Load()
}

// BenchmarkHTTP: short HTTP requests (a new connection each) from two
// client namespaces, 16 workers, 5 s per phase, in one topology:
//
//   - plain: host 1's backend at its own address, no agent, no filter;
//   - nlb-1: the same backend through the VIP, host 1 the only member
//     (every packet through the filter and the cluster MAC): the per-host
//     overhead is 1 − nlb-1/plain;
//   - nlb-3: the VIP with three members. On this one machine the three
//     hosts share two cores and every frame reaches all three (unicast
//     flooding), so this shows the cluster working, not scaling.
//
// The switch floods every frame in all phases (no MAC learning): a unicast
// cluster MAC is flooded by design, and the plain host must pay for the
// same copies on these shared cores for the comparison to measure nlb.
func BenchmarkHTTP(b *testing.B) {
	netns.RequireRoot(b)
	c := cluster.New(b, cluster.Options{Flood: true})
	const workers, d = 16, 5 * time.Second
	for range b.N {
		rps0, p50a, p99a, f0 := httpLoad(b, c, cluster.HostIP(1), workers, d)
		c.Start(1)
		if _, err := c.WaitConverged([]uint8{1}, 20*time.Second); err != nil {
			b.Fatal(err)
		}
		rps1, p50b, p99b, f1 := httpLoad(b, c, cluster.VIP, workers, d)
		c.Start(2)
		c.Start(3)
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			b.Fatal(err)
		}
		rps3, p50c, p99c, f3 := httpLoad(b, c, cluster.VIP, workers, d)
		b.Logf("plain %.0f req/s p50 %v p99 %v (%d failed); nlb 1 host %.0f req/s p50 %v p99 %v (%d failed); nlb 3 hosts %.0f req/s p50 %v p99 %v (%d failed)",
			rps0, p50a, p99a, f0, rps1, p50b, p99b, f1, rps3, p50c, p99c, f3)
		b.ReportMetric(rps0, "plain-req/s")
		b.ReportMetric(float64(p99a.Microseconds())/1000, "plain-p99-ms")
		b.ReportMetric(rps1, "nlb1-req/s")
		b.ReportMetric(float64(p99b.Microseconds())/1000, "nlb1-p99-ms")
		b.ReportMetric(rps3, "nlb3-req/s")
		b.ReportMetric(float64(p99c.Microseconds())/1000, "nlb3-p99-ms")
		b.ReportMetric(100*(1-rps1/rps0), "overhead-%")
		b.ReportMetric(0, "ns/op")
	}
}

// BenchmarkFailoverNamespaces: 20 trials of kill -9 of one agent with its
// host cut off, in a 3-host cluster at default settings (100 ms × 10):
// the time until a new connection in one of its buckets succeeds, probing
// with a fresh flow every 20 ms.
func BenchmarkFailoverNamespaces(b *testing.B) {
	netns.RequireRoot(b)
	c := cluster.New(b, cluster.Options{})
	c.StartAll(all3)
	var got []time.Duration
	for range b.N {
		got = append(got, failoverTrials(b, c, 20)...)
	}
	slices.Sort(got)
	q := func(p float64) float64 { return quantileMS(got, p) }
	b.Logf("failover over %d trials: %v", len(got), got)
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(got[len(got)-1].Milliseconds()), "max-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkAgentFootprint: the resident memory of each nlbd of an idle
// converged 3-host cluster, and its CPU use over 10 s idle.
func BenchmarkAgentFootprint(b *testing.B) {
	netns.RequireRoot(b)
	c := cluster.New(b, cluster.Options{})
	c.StartAll(all3)
	time.Sleep(6 * time.Second) // past the start-up suspicion (loss_tolerance + grace)
	for range b.N {
		cpu0 := map[uint8]time.Duration{}
		for _, id := range all3 {
			cpu0[id] = procCPU(b, c.Pid(id))
		}
		const idle = 10 * time.Second
		time.Sleep(idle)
		var rss, cpu float64
		for _, id := range all3 {
			cpu += float64(procCPU(b, c.Pid(id))-cpu0[id]) / float64(idle) * 100
			rss += procRSS(b, c.Pid(id))
		}
		b.ReportMetric(rss/3/1024, "rss-MiB")
		b.ReportMetric(cpu/3, "idle-cpu-%")
		b.ReportMetric(0, "ns/op")
	}
}

func procCPU(b *testing.B, pid int) time.Duration {
	v, err := cluster.ProcCPU(pid)
	if err != nil {
		b.Fatal(err)
	}
	return v
}

func procRSS(b *testing.B, pid int) float64 {
	v, err := cluster.ProcRSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	return v
}
