//go:build linux

// Command demo runs `make demo`: a 3-host nlb cluster in network
// namespaces with live traffic, a host failure and a drain, then cleans up
// everything (also on Ctrl-C).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/remote"
)

// runner is the netns.T of a program: cleanups run in reverse on exit.
type runner struct {
	mu       sync.Mutex
	cleanups []func()
}

func (r *runner) Helper()                         {}
func (r *runner) Logf(format string, args ...any) { fmt.Printf(format+"\n", args...) }
func (r *runner) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "error: "+format+"\n", args...)
}
func (r *runner) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "demo failed: "+format+"\n", args...)
	r.cleanup()
	os.Exit(1)
}
func (r *runner) Cleanup(f func()) { r.mu.Lock(); r.cleanups = append(r.cleanups, f); r.mu.Unlock() }
func (r *runner) cleanup() {
	r.mu.Lock()
	cs := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(cs) - 1; i >= 0; i-- {
		cs[i]()
	}
}

type counters struct {
	per    [4]atomic.Int64
	failed atomic.Int64
}

func (c *counters) line(start time.Time) string {
	return fmt.Sprintf("  t=%5.1fs   host1 %6d   host2 %6d   host3 %6d   failed %d",
		time.Since(start).Seconds(), c.per[1].Load(), c.per[2].Load(), c.per[3].Load(), c.failed.Load())
}

func main() {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "make demo needs root (eBPF, network namespaces)")
		os.Exit(1)
	}
	nlbd := "bin/nlbd"
	if len(os.Args) > 1 {
		nlbd = os.Args[1]
	}
	r := &runner{}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Println("\ninterrupted: cleaning up")
		r.cleanup()
		os.Exit(130)
	}()
	defer r.cleanup()

	fmt.Println("== nlb demo: 3 hosts, 2 client namespaces, unicast mode, VIP", cluster.VIP, "- default heartbeat", config.DefaultHeartbeatPeriod, "× 10")
	c := cluster.New(r, cluster.Options{Nlbd: nlbd, ClientIPs: 8, Period: config.DefaultHeartbeatPeriod})
	for id := uint8(1); id <= 3; id++ {
		c.Start(id)
	}
	t0 := time.Now()
	if _, err := c.WaitConverged([]uint8{1, 2, 3}, 30*time.Second); err != nil {
		r.Fatalf("%v", err)
	}
	fmt.Printf("cluster converged in %v\n\n", time.Since(t0).Round(time.Millisecond))
	printQuery(c, []uint8{1, 2, 3})

	var cnt counters
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.Clients[w%2]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id, _, err := cl.Get(cl.IPs[(w+i)%len(cl.IPs)], cluster.PortHTTP, 4*time.Second)
				if err != nil {
					cnt.failed.Add(1)
				} else if id >= 1 && id <= 3 {
					cnt.per[id].Add(1)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	start := time.Now()
	show := func(d time.Duration) {
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			time.Sleep(time.Second)
			fmt.Println(cnt.line(start))
		}
	}
	fmt.Println("\n== live traffic: new HTTP connections to the VIP, answered per host")
	show(4 * time.Second)

	// Client flows (address and port) in buckets host 3 owns, to time
	// failover: a fresh one is tried every 20 ms.
	cl := c.Clients[0]
	flows := c.FlowsOwnedBy(cl, cluster.PortHTTP, 1000, 1, 3)
	fmt.Println("\n== kill -9 host 3's agent and cut its cable")
	before := cnt.failed.Load()
	c.Kill(3)
	c.Isolate(3, true)
	killed := time.Now()
	var (
		mu       sync.Mutex
		failover = time.Duration(-1)
		probes   sync.WaitGroup
	)
	for _, f := range flows {
		mu.Lock()
		done := failover >= 0
		mu.Unlock()
		if done || time.Since(killed) > 10*time.Second {
			break
		}
		probes.Add(1)
		go func() {
			defer probes.Done()
			at := time.Since(killed)
			conn, err := cl.Dial(f.Addr(), f.Port(), cluster.PortHTTP, 500*time.Millisecond)
			if err != nil {
				return
			}
			defer conn.Close()
			if id, err := cluster.HTTPHost(conn, time.Second); err == nil && id != 3 {
				mu.Lock()
				if failover < 0 || at < failover {
					failover = at
				}
				mu.Unlock()
			}
		}()
		time.Sleep(20 * time.Millisecond)
	}
	probes.Wait()
	if failover < 0 {
		r.Fatalf("no new connection in host 3's buckets (%d flows) succeeded within 10 s of the kill", len(flows))
	}
	if _, err := c.WaitConverged([]uint8{1, 2}, 20*time.Second); err != nil {
		r.Fatalf("%v", err)
	}
	fmt.Printf("hosts 1 and 2 converged without host 3; new connections in host 3's buckets succeed again %v after the kill\n",
		failover.Round(time.Millisecond))
	show(3 * time.Second)
	duringFailure := cnt.failed.Load() - before

	fmt.Println("\n== drainstop host 2 (nlbctl drainstop): it takes no new connections, and stops when its own end")
	before = cnt.failed.Load()
	if _, err := c.Local(2, remote.CmdDrainStop, remote.Args{}); err != nil {
		r.Fatalf("%v", err)
	}
	drainStart := time.Now()
	var drained time.Duration
	for time.Since(drainStart) < 20*time.Second {
		if q, err := c.Query(2); err == nil && q.State == "stopped" {
			drained = time.Since(drainStart)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	show(3 * time.Second)
	close(stop)
	wg.Wait()
	duringDrain := cnt.failed.Load() - before
	fmt.Println()
	printQuery(c, []uint8{1, 2})

	total := cnt.per[1].Load() + cnt.per[2].Load() + cnt.per[3].Load()
	fmt.Println("\n== summary")
	fmt.Printf("  connections          %d (host1 %d, host2 %d, host3 %d), failed %d\n", total,
		cnt.per[1].Load(), cnt.per[2].Load(), cnt.per[3].Load(), cnt.failed.Load())
	fmt.Printf("  failover (kill -9)   %v until new connections in host 3's buckets succeed; %d connections failed meanwhile (a retransmitted SYN is not a failure)\n",
		failover.Round(time.Millisecond), duringFailure)
	fmt.Printf("  drainstop of host 2  stopped after %v, %d failed connections\n", drained.Round(time.Millisecond), duringDrain)
	fmt.Println("  cleaning up namespaces, bridge and agents")
}

func printQuery(c *cluster.Cluster, ids []uint8) {
	fmt.Printf("  %-5s %-22s %-6s %-8s %s\n", "HOST", "STATE", "EPOCH", "MEMBERS", "OWNED BUCKETS (web)")
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		q, err := c.Query(id)
		if err != nil {
			fmt.Printf("  %-5d %v\n", id, err)
			continue
		}
		m := make([]string, len(q.Members))
		for i, x := range q.Members {
			m[i] = fmt.Sprint(x)
		}
		fmt.Printf("  %-5d %-22s %-6d %-8s %d\n", id, q.State, q.Epoch, strings.Join(m, ","), q.Owned["web"])
	}
}
