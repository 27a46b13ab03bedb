//go:build linux

package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// TestMetrics: after a known number of connections, each host's
// Prometheus endpoint accounts for every packet: every host saw the same
// packets of rule web (each decides on all of them), the hosts' accepted
// packets add up to that total, and each host's share matches the
// connections it answered. Buckets, state, epoch, heartbeats and
// remote-control requests are there with consistent values.
func TestMetrics(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	epoch := startAll(t, c, all3)
	const conns = 600
	answered := map[uint8]int{}
	var mu sync.Mutex
	var failed atomic.Int64
	parallel(conns, 16, func(i int) {
		cl := c.Clients[i%len(c.Clients)]
		id, _, err := cl.Get(cl.IPs[i%len(cl.IPs)], cluster.PortHTTP, 3*time.Second)
		if err != nil {
			failed.Add(1)
			return
		}
		mu.Lock()
		answered[id]++
		mu.Unlock()
	})
	if failed.Load() != 0 {
		t.Fatalf("%d of %d connections failed", failed.Load(), conns)
	}
	time.Sleep(300 * time.Millisecond) // last FINs and ACKs
	seen := map[uint8]float64{}
	accepted := map[uint8]float64{}
	ownedSum := 0.0
	for _, id := range all3 {
		m, err := c.Metrics(id)
		if err != nil {
			t.Fatal(err)
		}
		web := func(reason string) float64 {
			v, ok := m.Value("nlb_packets_total", "rule", "web", "reason", reason)
			if !ok && reason != filter.ReasonDropDirtyNonSYN.String() && reason != filter.ReasonAcceptHeldFlow.String() {
				t.Errorf("host %d: no nlb_packets_total{rule=web,reason=%s}", id, reason)
			}
			return v
		}
		accepted[id] = web("accepted-owner") + web("accepted-held-flow")
		seen[id] = accepted[id] + web("dropped-not-owner") + web("dropped-dirty-non-syn")
		// Owned or dirty (within the grace after start): taking new flows.
		owned, _ := m.Value("nlb_buckets", "rule", "web", "mark", "owned")
		dirty, _ := m.Value("nlb_buckets", "rule", "web", "mark", "dirty")
		owned += dirty
		ownedSum += owned
		t.Logf("host %d: %d connections answered, web packets seen %.0f, accepted %.0f, owned buckets %.0f",
			id, answered[id], seen[id], accepted[id], owned)
		// Per packet ≥ 4 (SYN, ACK, request, FIN…) and ≤ 8 per connection.
		if a, n := accepted[id], float64(answered[id]); a < 4*n || a > 8*n {
			t.Errorf("host %d accepted %.0f packets for %d connections", id, a, answered[id])
		}
		for _, want := range []struct {
			name   string
			labels []string
			check  func(v float64) bool
			what   string
		}{
			{"nlb_epoch", nil, func(v float64) bool { return uint64(v) == epoch }, fmt.Sprintf("= %d", epoch)},
			{"nlb_members", nil, func(v float64) bool { return v == 3 }, "= 3"},
			{"nlb_state", []string{"state", "stopped"}, func(v float64) bool { return v == 0 }, "= 0"},
			{"nlb_lease_valid", nil, func(v float64) bool { return v == 1 }, "= 1"},
			{"nlb_convergences_total", nil, func(v float64) bool { return v >= 1 }, "≥ 1"},
			{"nlb_heartbeat_frames_sent_total", nil, func(v float64) bool { return v > 10 }, "> 10"},
			{"nlb_heartbeat_frames_received_total", []string{"peer", fmt.Sprint(id%3 + 1)}, func(v float64) bool { return v > 10 }, "> 10"},
			{"nlb_heartbeat_frames_refused_total", []string{"reason", "bad-auth"}, func(v float64) bool { return v == 0 }, "= 0"},
			{"nlb_remote_requests_total", []string{"command", "query", "outcome", "ok"}, func(v float64) bool { return v >= 1 }, "≥ 1"},
			{"nlb_remote_refused_total", nil, func(v float64) bool { return v == 0 }, "= 0"},
		} {
			v, ok := m.Value(want.name, want.labels...)
			if !ok || !want.check(v) {
				t.Errorf("host %d: %s%v = %v (present %v), want %s", id, want.name, want.labels, v, ok, want.what)
			}
		}
		st := 0.0
		for _, s := range []string{"converged", "converged as default"} {
			v, _ := m.Value("nlb_state", "state", s)
			st += v
		}
		if st != 1 {
			t.Errorf("host %d: nlb_state converged/default sum %v, want 1", id, st)
		}
	}
	if seen[1] != seen[2] || seen[2] != seen[3] || seen[1] == 0 {
		t.Errorf("hosts saw different numbers of web packets: %v", seen)
	}
	if total := accepted[1] + accepted[2] + accepted[3]; total != seen[1] {
		t.Errorf("accepted packets add up to %.0f, but every host saw %.0f", total, seen[1])
	}
	if ownedSum != filter.Buckets {
		t.Errorf("owned web buckets add up to %.0f, want %d", ownedSum, filter.Buckets)
	}
}

// TestHealthCheck: the HTTP service of host 3 dies while its agent runs.
// Its health check drains rule web on host 3: after the detection time
// no new connection goes there, and connections in the other hosts'
// buckets never fail. Query and metrics say why. When the service comes
// back, host 3 takes its share again.
func TestHealthCheck(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{Health: true})
	startAll(t, c, all3)
	// Flows in the buckets of hosts 1 and 2, each used once: they must
	// all succeed while host 3's service is down.
	cl := c.Clients[0]
	r := rand.New(rand.NewPCG(1, 2))
	var others []netip.AddrPort
	for len(others) < 300 {
		f := netip.AddrPortFrom(cl.IPs[r.IntN(len(cl.IPs))], uint16(20000+r.IntN(20000)))
		own, err := c.Owner(1, f, cluster.PortHTTP, "tcp")
		if err != nil {
			t.Fatal(err)
		}
		if own != 3 && own != 0 {
			others = append(others, f)
		}
	}
	var othersFailed atomic.Int64
	var next atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // one flow of the other hosts every 15 ms
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
			}
			i := int(next.Add(1)) - 1
			if i >= len(others) {
				return
			}
			conn, err := cl.Dial(others[i].Addr(), others[i].Port(), cluster.PortHTTP, 3*time.Second)
			if err != nil {
				othersFailed.Add(1)
				t.Errorf("flow %v (hosts 1–2): %v", others[i], err)
				continue
			}
			conn.Close()
		}
	}()
	time.Sleep(300 * time.Millisecond)
	c.StopHTTP(3)
	down := time.Now()
	// Withdrawn once 100 new connections in a row avoid host 3 and succeed.
	var withdrawn time.Duration
	for streak := 0; streak < 100; {
		if time.Since(down) > 15*time.Second {
			t.Fatal("host 3 still takes web connections 15 s after its service died")
		}
		id, _, err := cl.Get(cl.IPs[0], cluster.PortHTTP, time.Second)
		if err != nil || id == 3 {
			streak, withdrawn = 0, 0
			continue
		}
		if streak == 0 {
			withdrawn = time.Since(down)
		}
		streak++
	}
	t.Logf("service down → no new connection to host 3 after %v (check every 200ms, fall 2)", withdrawn.Round(time.Millisecond))
	q, err := c.Query(3)
	if err != nil {
		t.Fatal(err)
	}
	if h := q.Health["web"]; h == "" || h == "up" || q.Owned["web"] != 0 || q.Owned["sticky"] == 0 {
		t.Errorf("host 3 while its service is down: health %q, owned %v", h, q.Owned)
	}
	t.Logf("query on host 3: health web %q, owned %v", q.Health["web"], q.Owned)
	if m, err := c.Metrics(3); err != nil {
		t.Error(err)
	} else if v, ok := m.Value("nlb_health_check_up", "rule", "web"); !ok || v != 0 {
		t.Errorf("nlb_health_check_up{rule=web} on host 3 = %v (present %v), want 0", v, ok)
	}
	// Other rules on host 3 still serve.
	if _, _, err := cl.Get(cl.IPs[0], cluster.PortSticky, 2*time.Second); err != nil {
		t.Errorf("sticky while web is down on host 3: %v", err)
	}

	c.StartHTTP(3)
	up := time.Now()
	for {
		q, err := c.Query(3)
		if err == nil && q.Health["web"] == "up" && q.Owned["web"] > filter.Buckets/3-10 {
			break
		}
		if time.Since(up) > 15*time.Second {
			t.Fatalf("host 3 did not take its web share back: %+v %v", q, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("service back → host 3 owns its web share again after %v", time.Since(up).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	t.Logf("flows in hosts 1–2's buckets during the outage: %d, %d failed", next.Load(), othersFailed.Load())
	if m, err := c.Metrics(3); err != nil {
		t.Error(err)
	} else if v, _ := m.Value("nlb_health_check_up", "rule", "web"); v != 1 {
		t.Errorf("nlb_health_check_up{rule=web} on host 3 = %v after recovery, want 1", v)
	}
	// Host 3 answers web again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if id, _, err := cl.Get(cl.IPs[1], cluster.PortHTTP, time.Second); err == nil && id == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("host 3 never answered a web connection after recovery")
		}
	}
}
