//go:build linux

package e2e

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// TestHeartbeatJunkFlood: two client namespaces flood the segment with
// frames of the heartbeat ethertype as fast as they can (random junk,
// frames that open like heartbeats of another cluster, and forgeries of
// this cluster's heartbeats claiming every host ID from made-up sources)
// for NLB_FLOOD_SECONDS (60 s), with live traffic. The data plane drops
// them before the agents' sockets (as malformed, or by the per-source
// budget): no host evicts another, no connection fails, and at most 1 %
// of the real heartbeats are lost.
func TestHeartbeatJunkFlood(t *testing.T) {
	netns.RequireRoot(t)
	dur := 60 * time.Second
	if v, err := strconv.Atoi(os.Getenv("NLB_FLOOD_SECONDS")); err == nil && v > 0 {
		dur = time.Duration(v) * time.Second
	}
	c := cluster.New(t, cluster.Options{Clients: 3})
	startAll(t, c, all3)
	ld := startLoad(c, 2, cluster.PortHTTP)
	frames := cluster.JunkHeartbeatFrames(20_000, 5)
	before := scrapeAll(t, c)
	var sent atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for _, cl := range c.Clients[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < dur {
				n, err := cl.SendRaw(frames, dur-time.Since(start))
				if err != nil {
					t.Error(err)
					return
				}
				sent.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	time.Sleep(500 * time.Millisecond)
	after := scrapeAll(t, c)
	ld.finish(t, "new connections during the flood")
	t.Logf("flood: %d junk frames in %v (%.0f/s) from two namespaces", sent.Load(), took.Round(time.Millisecond), float64(sent.Load())/took.Seconds())
	delta := func(id uint8, name string, labels ...string) float64 {
		a, _ := after[id].Value(name, labels...)
		b, _ := before[id].Value(name, labels...)
		return a - b
	}
	worst := 0.0
	for _, id := range all3 {
		malformed := delta(id, "nlb_packets_total", "rule", "none", "reason", "dropped-malformed")
		source := delta(id, "nlb_packets_total", "rule", "none", "reason", "dropped-heartbeat-source")
		budget := delta(id, "nlb_packets_total", "rule", "none", "reason", "dropped-heartbeat-budget")
		passed := delta(id, "nlb_packets_total", "rule", "none", "reason", "passed-heartbeat")
		dropped := malformed + source + budget
		for _, peer := range all3 {
			if peer == id {
				continue
			}
			sentByPeer := delta(peer, "nlb_heartbeat_frames_sent_total")
			got := delta(id, "nlb_heartbeat_frames_received_total", "peer", strconv.Itoa(int(peer)))
			loss := 1 - got/sentByPeer
			worst = max(worst, loss)
			t.Logf("host %d heard %.0f of host %d's %.0f frames (loss %.2f %%)", id, got, peer, sentByPeer, 100*loss)
		}
		t.Logf("host %d: %.0f junk frames dropped in the kernel (%.0f malformed, %.0f by source, %.0f by budget), %.0f passed; socket lost %.0f, inbox full %.0f, bad-auth %.0f",
			id, dropped, malformed, source, budget, passed,
			delta(id, "nlb_heartbeat_frames_lost_total"), delta(id, "nlb_heartbeat_inbox_overflow_total"),
			delta(id, "nlb_heartbeat_frames_refused_total", "reason", "bad-auth"))
		if source == 0 {
			t.Errorf("host %d: no forgery was dropped by its source in the kernel", id)
		}
		if dropped < 0.9*float64(sent.Load()) {
			t.Errorf("host %d dropped only %.0f of %d junk frames in the kernel", id, dropped, sent.Load())
		}
	}
	if worst > 0.01 {
		t.Errorf("worst real heartbeat loss %.2f %%, want at most 1 %%", 100*worst)
	}
	for _, id := range all3 {
		b, _ := os.ReadFile(c.Hosts[id].Log)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "event=evict") {
				t.Errorf("host %d: %s", id, line)
			}
		}
	}
}
