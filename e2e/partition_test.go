//go:build linux

package e2e

import (
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// TestPartition: host 3 stops hearing hosts 1–2 and being heard (its
// heartbeats are cut both ways) while clients still reach every host, for
// 3 s — less than loss_tolerance + grace (1 s + 3 s) — then the link
// heals. Connections that existed before the split see no reset and no
// stall in every mode. New flows: as NLB (quorum off) both sides take
// the buckets they think orphaned, so some SYNs are answered twice (and
// such connections may fail); with the default configuration (a majority
// of the last agreed members) or quorum_voters 3, host 3, a minority,
// stops taking new flows before the majority takes its buckets: no SYN is
// answered twice and no new connection fails. The re-merge time after
// the heal is reported.
func TestPartition(t *testing.T) {
	netns.RequireRoot(t)
	for _, tc := range []struct {
		name   string
		quorum string
		voters int
	}{{"default", "", 0}, {"quorum-off", "off", 0}, {"quorum-3", "", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			quorum := tc.quorum != "off"
			c := cluster.New(t, cluster.Options{Quorum: tc.quorum, QuorumVoters: tc.voters})
			startAll(t, c, all3)
			watches := []*cluster.SYNACKWatch{c.WatchSYNACK(0), c.WatchSYNACK(1)}
			ll := openLongLived(t, c, 150)
			ld := startLoad(c, 6, cluster.PortHTTP)
			time.Sleep(time.Second)
			c.CutHeartbeats(3, true)
			time.Sleep(2 * time.Second)
			q3, err := c.Query(3)
			if err != nil {
				t.Fatal(err)
			}
			q1, err := c.Query(1)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("split: host 3 %s (members %v, lease valid %v, owns %v); host 1 %s (members %v)",
				q3.State, q3.Members, q3.LeaseValid, q3.Owned["web"], q1.State, q1.Members)
			time.Sleep(time.Second)
			c.CutHeartbeats(3, false)
			healed := time.Now()
			if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			t.Logf("re-merged %v after the heal", time.Since(healed).Round(time.Millisecond))
			time.Sleep(time.Second)
			close(ld.stop)
			ld.wg.Wait()
			doubles := 0
			for _, w := range watches {
				_, _, d := w.Result()
				doubles += len(d)
			}
			t.Logf("new connections: %d, %d failed; SYNs answered by two hosts: %d", ld.ok.Load(), ld.failed.Load(), doubles)
			if quorum && (doubles != 0 || ld.failed.Load() != 0) {
				t.Errorf("with a quorum: %d SYNs answered twice, %d new connections failed: %v", doubles, ld.failed.Load(), ld.errs)
			}
			if !quorum && q3.Owned["web"] == 0 {
				t.Errorf("without a quorum the isolated host should keep serving (NLB's behaviour)")
			}
			if quorum && (q3.LeaseValid || q3.Owned["web"] != 0) {
				t.Errorf("with a quorum the minority host must take no new flows: lease %v, owns %d", q3.LeaseValid, q3.Owned["web"])
			}
			ll.finish(t, "connections that existed before the split")
		})
	}
}
