//go:build linux

package bench

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// BenchmarkSoakFalseEvictions (make soak): a converged 3-host cluster with
// both cores saturated by a competing load and 10 % of heartbeat frames
// lost at every host, for NLB_SOAK_DURATION (default 5m). No host fails,
// so every eviction is false. Loss is an nftables netdev ingress rule
// (`ether type 0x886f numgen random mod 10 0 drop`): this kernel has no
// sch_netem.
func BenchmarkSoakFalseEvictions(b *testing.B) {
	netns.RequireRoot(b)
	dur := 5 * time.Minute
	if v := os.Getenv("NLB_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			b.Fatalf("NLB_SOAK_DURATION: %v", err)
		}
		dur = d
	}
	c := cluster.New(b, cluster.Options{})
	epoch := c.StartAll(all3)
	lossRule(b, c)
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	burnCPUs(ctx, &wg)
	b.ResetTimer()
	<-ctx.Done()
	wg.Wait()
	b.StopTimer()
	evictions := evictions(b, c)
	q, err := c.Query(1)
	if err != nil {
		b.Fatal(err)
	}
	var lost string
	c.Hosts[1].NS.Do(func() error {
		out, _ := exec.Command("nft", "list", "table", "netdev", "nlbsoak").CombinedOutput()
		lost = strings.TrimSpace(string(out))
		return nil
	})
	b.Logf("%v with both cores busy and 10%% heartbeat loss: %d evictions, epoch %d → %d; host 1's loss rule: %s",
		dur, evictions, epoch, q.Epoch, lost[strings.LastIndex(lost, "counter"):])
	b.ReportMetric(float64(evictions), "false-evictions")
	b.ReportMetric(float64(q.Epoch-epoch), "epoch-changes")
	b.ReportMetric(dur.Minutes(), "minutes")
	b.ReportMetric(0, "ns/op")
}
