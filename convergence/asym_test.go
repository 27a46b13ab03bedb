package convergence

import (
	"fmt"
	"testing"
	"time"
)

// TestSimAsymmetricLink: one link fails in one direction for 10 s. Safety
// must hold, epochs must not churn, and the cluster must settle. When host
// 2 stops hearing the leader, it follows the leader's epoch through host 3
// (a relay); when the leader stops hearing host 2, host 2 leaves the
// membership and closes, as it sees an epoch without itself.
func TestSimAsymmetricLink(t *testing.T) {
	for i, dir := range [][2]uint8{{1, 2}, {2, 1}, {1, 3}, {3, 1}, {2, 3}, {3, 2}} {
		t.Run(fmt.Sprintf("%d-to-%d", dir[0], dir[1]), func(t *testing.T) {
			s := formed(t, uint64(11+i), 3)
			e0 := s.epochs
			s.net.SetLoss(0.1, 0)
			s.net.SetDelay(0, 50*time.Millisecond)
			s.net.SetLinkLoss(s.name(dir[0]), s.name(dir[1]), 1)
			s.run(10 * time.Second)
			if n := s.epochs - e0; n > 2 {
				t.Fatalf("%d epochs proposed in 10 s of a one-way link failure: a convergence storm", n)
			}
			if !s.settled() {
				s.fail(t, "not settled during a one-way link failure")
			}
			s.net.SetLinkLoss(s.name(dir[0]), s.name(dir[1]), 0)
			s.net.SetLoss(0, 0)
			if s.settle(10*time.Second) < 0 {
				s.fail(t, "no recovery after the link came back")
			}
			if len(s.violations) > 0 {
				s.fail(t, "")
			}
		})
	}
}
