//go:build linux

package e2e

import (
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// TestFlapping: host 3's heartbeats are cut for 1.5 s out of every 3 s,
// ten times, in a cluster with a quorum. Flap damping keeps it out after
// its second eviction instead of readmitting it each time: the other
// hosts propose few epochs. Once its link is steady it is a member again
// after its hold-down. The epochs proposed are reported.
func TestFlapping(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{QuorumVoters: 3})
	e0 := startAll(t, c, all3)
	ld := startLoad(c, 4, cluster.PortHTTP)
	for range 10 {
		c.CutHeartbeats(3, true)
		time.Sleep(1500 * time.Millisecond)
		c.CutHeartbeats(3, false)
		time.Sleep(1500 * time.Millisecond)
	}
	q, err := c.Query(1)
	if err != nil {
		t.Fatal(err)
	}
	steady := time.Now()
	if _, err := c.WaitConverged(all3, 60*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("30 s of flapping: host 1 went from epoch %d to %d (%d convergences); host 3 a member again %v after the link steadied",
		e0, q.Epoch, q.Convergences, time.Since(steady).Round(100*time.Millisecond))
	// Undamped, each of the ten cuts costs an eviction and a
	// readmission: 20 epochs. Damped, the third eviction keeps it out.
	if q.Epoch-e0 > 10 {
		t.Errorf("%d epochs in 30 s of flapping: damping does not hold", q.Epoch-e0)
	}
	ld.finish(t, "new connections while host 3 flapped")
}
