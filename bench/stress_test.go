//go:build linux

package bench

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
)

// lossRule drops one heartbeat frame in ten at every host's NIC (an
// nftables netdev ingress rule: this kernel has no sch_netem).
func lossRule(b *testing.B, c *cluster.Cluster) {
	for _, id := range all3 {
		h := c.Hosts[id]
		rules := fmt.Sprintf(`table netdev nlbsoak {
	chain in {
		type filter hook ingress device %s priority 0; policy accept;
		ether type 0x886f numgen random mod 10 0 counter drop
	}
}`, h.Ifname)
		if err := h.NS.Do(func() error { return nft(rules) }); err != nil {
			b.Fatalf("loss rule on host %d: %v", id, err)
		}
	}
}

// burnCPUs keeps every core busy until ctx ends (a competing load).
func burnCPUs(ctx context.Context, wg *sync.WaitGroup) {
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			x := 0
			for ctx.Err() == nil {
				for i := 0; i < 1_000_000; i++ {
					x += i
				}
			}
			_ = x
		}()
	}
}

// junkFlood sends frames of the heartbeat ethertype from client cl until
// ctx ends: random junk, and frames that open like another cluster's
// heartbeats.
func junkFlood(ctx context.Context, wg *sync.WaitGroup, cl *cluster.Client) {
	frames := cluster.JunkHeartbeatFrames(4096, 7)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := cl.SendRaw(frames, time.Second); err != nil {
				return
			}
		}
	}()
}

// evictions counts the evict events in the hosts' logs.
func evictions(b *testing.B, c *cluster.Cluster) int {
	n := 0
	for _, id := range all3 {
		raw, err := os.ReadFile(c.Hosts[id].Log)
		if err != nil {
			b.Fatal(err)
		}
		n += strings.Count(string(raw), "event=evict")
	}
	return n
}

// failoverTrials kills one agent (its host cut off) trials times and
// returns, per trial, the time until a new connection in one of its
// buckets succeeds elsewhere, probing with a fresh flow every 20 ms.
func failoverTrials(b *testing.B, c *cluster.Cluster, trials int) []time.Duration {
	var got []time.Duration
	for trial := range trials {
		victim := uint8(2 + trial%2)
		flows := c.FlowsOwnedBy(c.Clients[0], cluster.PortHTTP, 150, uint64(trial), victim)
		time.Sleep(time.Duration(trial*37%100) * time.Millisecond) // a random phase of the heartbeat
		c.Kill(victim)
		c.Isolate(victim, true)
		killed := time.Now()
		first := make(chan time.Duration, len(flows))
		var wg sync.WaitGroup
		for _, f := range flows {
			if time.Since(killed) > 3*time.Second {
				break
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				at := time.Since(killed)
				conn, err := c.Clients[0].Dial(f.Addr(), f.Port(), cluster.PortHTTP, 500*time.Millisecond)
				if err != nil {
					return
				}
				defer conn.Close()
				if id, err := cluster.HTTPHost(conn, time.Second); err == nil && id != victim {
					first <- at
				}
			}()
			time.Sleep(20 * time.Millisecond)
		}
		wg.Wait()
		close(first)
		best := time.Duration(-1)
		for at := range first {
			if best < 0 || at < best {
				best = at
			}
		}
		if best < 0 {
			b.Fatalf("trial %d: host %d's buckets not taken over within 3 s", trial, victim)
		}
		got = append(got, best)
		c.Isolate(victim, false)
		c.Start(victim)
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			b.Fatal(err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	slices.Sort(got)
	return got
}

// quantileMS is the p-quantile of sorted durations, in ms.
func quantileMS(sorted []time.Duration, p float64) float64 {
	return float64(sorted[int(p*float64(len(sorted)-1))].Microseconds()) / 1000
}

// BenchmarkDetectionCurve (make soak): false evictions against the
// detection window (period × loss_tolerance 10: 300 ms, 500 ms, 1 s) on a
// 3-host cluster with both cores saturated, 10 % of heartbeat frames lost
// at every host and a junk flood of the heartbeat ethertype, for
// NLB_CURVE_DURATION (default 60 s) per window; then failover trials under
// the same stress (NLB_CURVE_TRIALS, default 10).
func BenchmarkDetectionCurve(b *testing.B) {
	dur, trials := 60*time.Second, 10
	if v := os.Getenv("NLB_CURVE_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("NLB_CURVE_DURATION: %v", err)
		}
		dur = d
	}
	if v := os.Getenv("NLB_CURVE_TRIALS"); v != "" {
		fmt.Sscan(v, &trials)
	}
	for _, period := range []time.Duration{30 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond} {
		b.Run(fmt.Sprintf("window=%v", 10*period), func(b *testing.B) {
			c := cluster.New(b, cluster.Options{Period: period, Clients: 2})
			epoch := c.StartAll(all3)
			lossRule(b, c)
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			burnCPUs(ctx, &wg)
			junkFlood(ctx, &wg, c.Clients[1])
			defer func() { cancel(); wg.Wait() }()
			b.ResetTimer()
			time.Sleep(dur)
			falseEv := evictions(b, c)
			q, err := c.Query(1)
			if err != nil {
				b.Fatal(err)
			}
			got := failoverTrials(b, c, trials)
			b.StopTimer()
			b.Logf("window %v, %v stressed: %d false evictions, epoch %d → %d; failover under stress %v",
				10*period, dur, falseEv, epoch, q.Epoch, got)
			b.ReportMetric(float64(falseEv), "false-evictions")
			b.ReportMetric(quantileMS(got, 0.5), "failover-p50-ms")
			b.ReportMetric(quantileMS(got, 0.99), "failover-p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
