//go:build linux

package e2e

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// TestSecondCluster: a second cluster with the same VIP and another key
// starts on the segment (stopped: it serves nothing). Its heartbeats are
// refused as bad-auth and counted, each host warns once that another key
// announces its VIP, and nothing else changes: same epoch and states, no
// connection lost. (A second cluster that serves would answer clients too:
// a configuration error the warning points at, as with NLB.)
func TestSecondCluster(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	epoch := startAll(t, c, all3)
	ll := openLongLived(t, c, 60)
	ld := startLoad(c, 4, cluster.PortHTTP)
	before := scrapeAll(t, c)
	c.AddForeign(4, "stopped")
	c.Start(4)
	time.Sleep(3 * time.Second)
	after := scrapeAll(t, c)
	for _, id := range all3 {
		b, _ := before[id].Value("nlb_heartbeat_frames_refused_total", "reason", "bad-auth")
		a, _ := after[id].Value("nlb_heartbeat_frames_refused_total", "reason", "bad-auth")
		raw, _ := os.ReadFile(c.Hosts[id].Log)
		warned := strings.Count(string(raw), "signed with another key")
		t.Logf("host %d: %.0f frames of the other cluster refused (bad-auth), %d warning(s)", id, a-b, warned)
		if a-b < 10 || warned != 1 {
			t.Errorf("host %d: %.0f refused, %d warnings; want ≥ 10 and 1", id, a-b, warned)
		}
		q, err := c.Query(id)
		if err != nil || q.Epoch != epoch || len(q.Members) != 3 {
			t.Errorf("host %d: %+v %v", id, q, err)
		}
	}
	if q, err := c.Query(4); err != nil || q.State != "stopped" || len(q.Heard) != 1 {
		t.Errorf("the other cluster's host: %+v %v", q, err)
	}
	ld.finish(t, "new connections with a second cluster on the segment")
	ll.finish(t, "long-lived connections with a second cluster on the segment")
}
