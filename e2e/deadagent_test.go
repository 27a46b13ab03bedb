//go:build linux

package e2e

import (
	"errors"
	"net"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// TestDeadAgent: the agent of host 3 is killed with SIGKILL while host 3,
// its backend and its pinned filter stay up, under 300 long-lived
// connections and a steady stream of new ones. Its lease runs out before
// the others take its buckets; a capture at both clients finds no SYN
// answered by two hosts at any time; its established connections keep
// working through the takeover (the new owners keep its buckets dirty for
// the grace); the new owners answer new flows in its buckets; restarted,
// it rejoins. 0 resets, 0 stalls, 0 failed connections throughout.
func TestDeadAgent(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{Grace: 10 * time.Second})
	startAll(t, c, all3)
	w0, w1 := c.WatchSYNACK(0), c.WatchSYNACK(1)
	victims := c.FlowsOwnedBy(c.Clients[0], cluster.PortHTTP, 160, 3, 3)
	ll := openLongLived(t, c, 300)
	ld := startLoad(c, 6, cluster.PortHTTP)
	time.Sleep(time.Second)
	onHost3 := 0
	ll.hosts.Range(func(_, h any) bool {
		if h.(uint8) == 3 {
			onHost3++
		}
		return true
	})

	// Probe host 3's buckets with a fresh flow every 25 ms.
	type probe struct {
		at   time.Duration
		host uint8
		err  error
	}
	var mu sync.Mutex
	var probes []probe
	var wg sync.WaitGroup
	c.Kill(3)
	killed := time.Now()
	convergedAfter := make(chan time.Duration, 1)
	go func() {
		if _, err := c.WaitConverged([]uint8{1, 2}, 10*time.Second); err != nil {
			t.Error(err)
		}
		convergedAfter <- time.Since(killed)
	}()
	for _, f := range victims {
		if time.Since(killed) > 4*time.Second {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			at := time.Since(killed)
			conn, err := c.Clients[0].Dial(f.Addr(), f.Port(), cluster.PortHTTP, 400*time.Millisecond)
			p := probe{at: at, err: err}
			if err == nil {
				p.host, err = readHost(conn)
				p.err = err
				conn.Close()
			}
			mu.Lock()
			probes = append(probes, p)
			mu.Unlock()
		}()
		time.Sleep(25 * time.Millisecond)
	}
	wg.Wait()
	sort.Slice(probes, func(i, j int) bool { return probes[i].at < probes[j].at })
	var lastOld, firstNew time.Duration = -1, -1
	for _, p := range probes {
		switch {
		case p.err == nil && p.host == 3:
			lastOld = p.at
		case p.err == nil && firstNew < 0:
			firstNew = p.at
		}
	}
	if firstNew < 0 {
		t.Fatalf("no new owner answered in host 3's buckets within 4 s: %v", probes)
	}
	for _, p := range probes {
		if p.err == nil && p.host == 3 && p.at > firstNew {
			t.Errorf("host 3's filter took a new flow at +%v, after a new owner did at +%v", p.at, firstNew)
		}
	}
	t.Logf("agent of host 3 killed: its filter took new flows until +%v (lease), new owners from +%v: no accepter for at most %v",
		lastOld.Round(time.Millisecond), firstNew.Round(time.Millisecond), (firstNew - max(lastOld, 0)).Round(time.Millisecond))
	t.Logf("hosts 1–2 converged without host 3 %v after the kill (full service)", (<-convergedAfter).Round(time.Millisecond))
	q, err := c.Query(1)
	if err != nil || len(q.Silent) != 1 || q.Silent[0].Host != 3 || !q.Silent[0].LeaseExpired || !q.Silent[0].Evicted {
		t.Errorf("query on host 1 after the kill: silent %+v, %v", q.Silent, err)
	}

	time.Sleep(time.Second) // host 3's connections go on, inside the grace
	c.Start(3)
	if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	// The kernel counted what the dead agent's filter refused (the
	// counters are pinned: the restarted agent reads the same ones).
	if m, err := c.Metrics(3); err != nil {
		t.Error(err)
	} else if v, _ := m.Value("nlb_packets_total", "rule", "web", "reason", "dropped-lease-expired"); v == 0 {
		t.Error("host 3 counted no packet dropped-lease-expired")
	} else {
		t.Logf("host 3's filter dropped %.0f web packets with its lease expired", v)
	}
	ld.finish(t, "new connections across the kill and restart")
	ll.finish(t, "long-lived connections (of which "+itoa(onHost3)+" on host 3)")
	for i, w := range []*cluster.SYNACKWatch{w0, w1} {
		synacks, syns, doubles := w.Result()
		t.Logf("client %d: %d SYN-ACKs for %d SYNs, %d SYNs answered by two hosts", i, synacks, syns, len(doubles))
		if syns < 100 {
			t.Errorf("client %d: only %d SYNs answered: is the capture working?", i, syns)
		}
		if len(doubles) > 0 {
			t.Errorf("client %d: SYNs answered by two hosts: %v", i, doubles[:min(len(doubles), 5)])
		}
	}
}

// TestWholeHostCrash: host 3 is cut off the segment (its agent killed as
// well). The new owners take its buckets; for the grace they drop the
// packets of its connections (the client sees a stall, not a RST); after
// the grace a packet of such a connection is answered with a RST.
func TestWholeHostCrash(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	startAll(t, c, all3)
	cl := c.Clients[0]
	f := c.FlowsOwnedBy(cl, cluster.PortEcho, 1, 5, 3)[0]
	conn, err := cl.Dial(f.Addr(), f.Port(), cluster.PortEcho, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if n, err := conn.Read(buf); err != nil || buf[0] != '3' {
		t.Fatalf("echo before the crash: %q %v", buf[:n], err)
	}
	c.Kill(3)
	c.Isolate(3, true)
	cut := time.Now()
	// A new connection in host 3's buckets is taken by a new owner.
	g := c.FlowsOwnedBy(cl, cluster.PortHTTP, 1, 6, 3)[0]
	if _, err := c.WaitConverged([]uint8{1, 2}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	conn2, err := cl.Dial(g.Addr(), g.Port(), cluster.PortHTTP, 3*time.Second)
	if err != nil {
		t.Fatalf("new flow in host 3's buckets after the takeover: %v", err)
	}
	if id, err := readHost(conn2); err != nil || id == 3 {
		t.Fatalf("new flow answered by host %d: %v", id, err)
	}
	conn2.Close()
	// Inside the grace (loss_tolerance 1 s + grace 3 s): no answer, no RST.
	conn.Write([]byte("during the grace\n"))
	conn.SetReadDeadline(cut.Add(2500 * time.Millisecond))
	_, err = conn.Read(buf)
	if !isTimeout(err) {
		t.Fatalf("inside the grace, the old connection got %v, want a stall (no RST)", err)
	}
	dirty := 0.0
	for _, id := range []uint8{1, 2} {
		if m, err := c.Metrics(id); err != nil {
			t.Error(err)
		} else {
			v, _ := m.Value("nlb_packets_total", "rule", "echo", "reason", "dropped-dirty-non-syn")
			dirty += v
		}
	}
	if dirty == 0 {
		t.Error("the new owners counted no packet dropped-dirty-non-syn during the grace")
	}
	// After the grace: the new owner resets it (on a retransmission).
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, err = conn.Read(buf)
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after the grace: %v, want a reset from the new owner", err)
	}
	t.Logf("host cut off: its connection stalled, then was reset %v after the cut (loss_tolerance 10 × 100ms + grace 3s, then the client's retransmission)",
		time.Since(cut).Round(time.Millisecond))
}

func readHost(conn net.Conn) (uint8, error) { return cluster.HTTPHost(conn, 2*time.Second) }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func itoa(n int) string { return strconv.Itoa(n) }
