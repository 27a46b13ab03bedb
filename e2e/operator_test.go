//go:build linux

package e2e

import (
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// TestOperatorCycles: 10 stop/start and 5 drainstop/start cycles of host
// 3, under live traffic, with flap damping on (the agent's default). An
// operator's action is not a failure: no peer evicts host 3 and it owns
// its share again shortly after every start, and no connection fails: a
// stop keeps the connections host 3 already holds (unlike NLB's).
func TestOperatorCycles(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{DrainTimeout: time.Minute})
	startAll(t, c, all3)
	ld := startLoad(c, 4, cluster.PortHTTP)
	owns := func() bool {
		q, err := c.Query(3)
		return err == nil && q.Owned["web"] > 0
	}
	// Between operator actions, 1.1 to 1.5 s: a SYN lost in the short
	// handoff gap after a stop (the stopped host's buckets are nobody's
	// until the others open them) is sent again after 1 s and must then
	// be answered. (At a steady 1 s cadence, every retransmission of one
	// SYN could land in a gap, as TCP backs off by 1 s, 2 s, ...)
	r := rand.New(rand.NewPCG(7, 7))
	pause := func() { time.Sleep(1100*time.Millisecond + time.Duration(r.IntN(400))*time.Millisecond) }
	var back []time.Duration
	for cycle := 0; cycle < 15; cycle++ {
		leave := remote.CmdStop
		if cycle == 10 {
			ld.finish(t, "new connections during 10 stop/start cycles")
			ld = startLoad(c, 4, cluster.PortHTTP)
		}
		if cycle >= 10 {
			leave = remote.CmdDrainStop
		}
		t.Logf("%s cycle %d: %v", time.Now().Format("15:04:05.000"), cycle, leave)
		if _, err := c.Local(3, leave, remote.Args{}); err != nil {
			t.Fatalf("cycle %d: %v: %v", cycle, leave, err)
		}
		// A drainstop waits for host 3's connections, half-open ones too
		// (a SYN it answered just before the drain whose ACK went to the
		// bucket's new owner waits out TCP's SYN-ACK retries), at most
		// the drain timeout.
		left := time.Now()
		waitStateFor(t, c, 3, time.Minute+10*time.Second, "stopped")
		if d := time.Since(left); d > 2*time.Second {
			t.Logf("cycle %d: %v took %v to reach stopped", cycle, leave, d.Round(time.Millisecond))
		}
		pause()
		t.Logf("%s cycle %d: start", time.Now().Format("15:04:05.000"), cycle)
		if _, err := c.Local(3, remote.CmdStart, remote.Args{}); err != nil {
			t.Fatalf("cycle %d: start: %v", cycle, err)
		}
		start := time.Now()
		for !owns() && time.Since(start) < 30*time.Second {
			time.Sleep(20 * time.Millisecond)
		}
		back = append(back, time.Since(start))
		if !owns() {
			t.Fatalf("cycle %d: host 3 owns nothing 30 s after start", cycle)
		}
		pause()
	}
	ld.finish(t, "new connections during 5 drainstop/start cycles")
	slices.Sort(back)
	t.Logf("host 3 owned its share again after start: median %v, slowest %v", back[len(back)/2].Round(time.Millisecond), back[len(back)-1].Round(time.Millisecond))
	// Before the fix this took 5.7 s, then 9.6, 17.5, 31.4 s as flap
	// damping counted each start as a failure. The bound catches that
	// regression without timing a healthy run to the millisecond.
	if back[len(back)-1] > 1500*time.Millisecond { // the bound
		t.Errorf("host 3 took %v to own its share after a start", back[len(back)-1])
	}
	for _, id := range all3 {
		b, _ := os.ReadFile(c.Hosts[id].Log)
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "event=evict") || strings.Contains(line, "event=damped") {
				t.Errorf("host %d: %s", id, line)
			}
		}
	}
}
