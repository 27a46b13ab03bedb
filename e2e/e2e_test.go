//go:build linux

// Package e2e runs whole clusters of real nlbd agents in network
// namespaces with real traffic (internal/cluster).
package e2e

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

var all3 = []uint8{1, 2, 3}

func startAll(t *testing.T, c *cluster.Cluster, ids []uint8) uint64 {
	t.Helper()
	return c.StartAll(ids)
}

// parallel runs n jobs on w workers.
func parallel(n, w int, job func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				job(i)
			}
		}()
	}
	wg.Wait()
}

// TestSpread: in each MAC mode, connections from many client ports and
// two client namespaces all succeed, each is answered by exactly the host
// the live tables name (nlbctl filter), and per-host counts match the
// weights. UDP flows likewise; ICMP echo gets exactly one reply; with
// affinity single every connection of a client IP lands on one host.
func TestSpread(t *testing.T) {
	netns.RequireRoot(t)
	for _, tc := range []struct {
		mode      string
		tcp, udp  int
		weights   map[uint8]int
		checkICMP bool
	}{
		{"unicast", 3000, 600, map[uint8]int{1: 50, 2: 50, 3: 100}, true},
		{"multicast", 3000, 600, nil, true},
		{"igmp", 600, 300, nil, false},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			c := cluster.New(t, cluster.Options{Mode: tc.mode, Weights: tc.weights})
			startAll(t, c, all3)
			counts := map[uint8]int{}
			var mu sync.Mutex
			var failures, wrong atomic.Int64
			parallel(tc.tcp, 32, func(i int) {
				cl := c.Clients[i%len(c.Clients)]
				id, local, err := cl.Get(cl.IPs[(i/2)%len(cl.IPs)], cluster.PortHTTP, 3*time.Second)
				if err != nil {
					if failures.Add(1) < 5 {
						t.Errorf("connection %d: %v", i, err)
					}
					return
				}
				own, err := c.Owner(uint8(1+i%3), local, cluster.PortHTTP, "tcp")
				if err != nil || own != id {
					if wrong.Add(1) < 5 {
						t.Errorf("%v answered by host %d, tables name %d (%v)", local, id, own, err)
					}
				}
				mu.Lock()
				counts[id]++
				mu.Unlock()
			})
			total := 0
			for _, w := range tc.weights {
				total += w
			}
			for _, id := range all3 {
				share := 1.0 / 3
				if tc.weights != nil {
					share = float64(tc.weights[id]) / float64(total)
				}
				exp := share * float64(tc.tcp)
				sd := math.Sqrt(float64(tc.tcp) * share * (1 - share))
				if d := math.Abs(float64(counts[id]) - exp); d > 5*sd {
					t.Errorf("host %d: %d connections, expected %.0f ± %.0f (5 sd)", id, counts[id], exp, 5*sd)
				}
			}
			t.Logf("%s: %d TCP connections, %d failed, %d on the wrong host; per host %v", tc.mode, tc.tcp, failures.Load(), wrong.Load(), counts)

			// UDP flows.
			ucounts := map[uint8]int{}
			var ufail atomic.Int64
			parallel(tc.udp, 16, func(i int) {
				cl := c.Clients[i%len(c.Clients)]
				id, local, err := cl.UDPEcho(cl.IPs[(i/2)%len(cl.IPs)], 2*time.Second)
				if err != nil {
					if ufail.Add(1) < 5 {
						t.Errorf("udp flow %d: %v", i, err)
					}
					return
				}
				own, err := c.Owner(1, local, cluster.PortEcho, "udp")
				if err != nil || own != id {
					t.Errorf("udp %v answered by host %d, tables name %d (%v)", local, id, own, err)
				}
				mu.Lock()
				ucounts[id]++
				mu.Unlock()
			})
			t.Logf("%s: %d UDP flows, %d failed; per host %v", tc.mode, tc.udp, ufail.Load(), ucounts)

			// Affinity single: one host per client IP, whatever the port.
			for ci, cl := range c.Clients {
				for _, ip := range cl.IPs[:2] {
					seen := map[uint8]int{}
					for range 20 {
						id, _, err := cl.Get(ip, cluster.PortSticky, 3*time.Second)
						if err != nil {
							t.Fatalf("sticky from %v: %v", ip, err)
						}
						seen[id]++
					}
					if len(seen) != 1 {
						t.Errorf("client %d %v: affinity single spread over hosts %v", ci, ip, seen)
					}
				}
			}
			if tc.checkICMP {
				checkEcho(t, c, cluster.VIP)
			}
		})
	}
}

// checkEcho sends echo requests (ICMP or ICMPv6, by vip's family) from
// the first client to vip and requires exactly one reply per request.
func checkEcho(t *testing.T, c *cluster.Cluster, vip netip.Addr) {
	cl := c.Clients[0]
	network, proto, src := "ip4:icmp", 1, cl.IPs[0]
	var req, rep icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	var psh []byte
	if vip.Is6() {
		network, proto, src = "ip6:ipv6-icmp", 58, cl.IPs6[0]
		req, rep = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
		psh = icmp.IPv6PseudoHeader(src.AsSlice(), vip.AsSlice())
	}
	var conn *icmp.PacketConn
	if err := cl.NS.Do(func() (err error) {
		conn, err = icmp.ListenPacket(network, src.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 20
	replies := map[int]int{}
	for seq := range n {
		msg := icmp.Message{Type: req, Body: &icmp.Echo{ID: 0x4e4c, Seq: seq, Data: []byte("nlb")}}
		b, _ := msg.Marshal(psh)
		if _, err := conn.WriteTo(b, &net.IPAddr{IP: vip.AsSlice()}); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	for {
		k, from, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		m, err := icmp.ParseMessage(proto, buf[:k])
		if err != nil || m.Type != rep {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == 0x4e4c && from.String() == vip.String() {
			replies[e.Seq]++
		}
	}
	for seq := range n {
		if replies[seq] != 1 {
			t.Errorf("echo %d to %s: %d replies, want exactly 1", seq, vip, replies[seq])
		}
	}
}

// load opens short connections (HTTP on the web rule) until stop, from
// every client address, and counts failures; a SYN retransmit is allowed
// (the timeout is 4 s).
type load struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup
	mu         sync.Mutex
	errs       []string
}

func startLoad(c *cluster.Cluster, workers int, port uint16) *load {
	l := &load{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			cl := c.Clients[w%len(c.Clients)]
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				_, local, err := cl.Get(cl.IPs[(w+i)%len(cl.IPs)], port, 4*time.Second)
				if err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 5 {
						l.errs = append(l.errs, fmt.Sprintf("%s %v: %v", time.Now().Format("15:04:05.000"), local, err))
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load) finish(t *testing.T, what string) {
	t.Helper()
	l.end()
	t.Logf("%s: %d new connections, %d failed", what, l.ok.Load(), l.failed.Load())
	if l.failed.Load() != 0 {
		t.Errorf("%s: %d new connections failed: %v", what, l.failed.Load(), l.errs)
	}
}

// end stops the load and waits for its workers.
func (l *load) end() {
	close(l.stop)
	l.wg.Wait()
}

// longLived keeps n echo connections open, each sending a line every
// period and requiring its answer within 3 s (else a stall).
type longLived struct {
	resets, stalls, lines atomic.Int64
	stop                  chan struct{}
	wg                    sync.WaitGroup
	hosts                 sync.Map // conn index -> host
	mu                    sync.Mutex
	errs                  []string
}

func openLongLived(t *testing.T, c *cluster.Cluster, n int) *longLived {
	return openLongLivedTo(t, c, n, false)
}

// openLongLivedTo is openLongLived to the IPv4 VIP or (v6) the IPv6 VIP.
func openLongLivedTo(t *testing.T, c *cluster.Cluster, n int, v6 bool) *longLived {
	t.Helper()
	ll := &longLived{stop: make(chan struct{})}
	conns := make([]*net.TCPConn, n)
	parallel(n, 16, func(i int) {
		cl := c.Clients[i%len(c.Clients)]
		var conn *net.TCPConn
		var err error
		if v6 {
			conn, err = cl.DialTo(cl.IPs6[(i/2)%len(cl.IPs6)], netip.AddrPortFrom(cluster.VIP6, cluster.PortEcho), 4*time.Second)
		} else {
			conn, err = cl.Dial(cl.IPs[(i/2)%len(cl.IPs)], 0, cluster.PortEcho, 4*time.Second)
		}
		if err != nil {
			t.Errorf("long-lived %d: %v", i, err)
			return
		}
		conns[i] = conn
	})
	if t.Failed() {
		t.FailNow()
	}
	for i, conn := range conns {
		ll.wg.Add(1)
		go func() {
			defer ll.wg.Done()
			defer conn.Close()
			buf := make([]byte, 128)
			tick := time.NewTicker(300 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-ll.stop:
					return
				case <-tick.C:
				}
				conn.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := fmt.Fprintf(conn, "line %d\n", i); err != nil {
					ll.fail(&ll.resets, i, err)
					return
				}
				_, err := conn.Read(buf)
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						ll.fail(&ll.stalls, i, err)
					} else {
						ll.fail(&ll.resets, i, err)
					}
					return
				}
				ll.lines.Add(1)
				ll.hosts.Store(i, buf[0]-'0')
			}
		}()
	}
	return ll
}

func (ll *longLived) fail(n *atomic.Int64, i int, err error) {
	n.Add(1)
	ll.mu.Lock()
	if len(ll.errs) < 5 {
		host, _ := ll.hosts.Load(i)
		ll.errs = append(ll.errs, fmt.Sprintf("%s conn %d (host %v): %v", time.Now().Format("15:04:05.000"), i, host, err))
	}
	ll.mu.Unlock()
}

func (ll *longLived) finish(t *testing.T, what string) {
	t.Helper()
	close(ll.stop)
	ll.wg.Wait()
	t.Logf("%s: %d lines on long-lived connections, %d resets, %d stalls", what, ll.lines.Load(), ll.resets.Load(), ll.stalls.Load())
	if ll.resets.Load()+ll.stalls.Load() != 0 {
		t.Errorf("%s: %d resets, %d stalls: %v", what, ll.resets.Load(), ll.stalls.Load(), ll.errs)
	}
}

// modes are the MAC modes the scenarios below run in; TestSpread and
// TestHostFailure add igmp.
var modes = []string{"unicast", "multicast"}

// eachMode runs scenario once per MAC mode as a subtest.
func eachMode(t *testing.T, ms []string, scenario func(t *testing.T, mode string)) {
	netns.RequireRoot(t)
	for _, m := range ms {
		t.Run(m, func(t *testing.T) { scenario(t, m) })
	}
}

// TestHostFailure: kill -9 one agent and cut its host off; new
// connections in its buckets succeed again after the failover time
// (reported); connections on the other hosts see no error.
func TestHostFailure(t *testing.T) {
	eachMode(t, append(modes, "igmp"), func(t *testing.T, mode string) {
		c := cluster.New(t, cluster.Options{Mode: mode, ClientIPs: 10})
		startAll(t, c, all3)
		// The victim is the host that owns the first client address's
		// sticky bucket (affinity single: the address alone); the others
		// are addresses the other hosts own.
		victimCl := c.Clients[0]
		owners := map[netip.Addr]uint8{}
		for _, ip := range victimCl.IPs {
			own, err := c.Owner(1, netip.AddrPortFrom(ip, 1), cluster.PortSticky, "tcp")
			if err != nil {
				t.Fatal(err)
			}
			owners[ip] = own
		}
		victimIP := victimCl.IPs[0]
		victim := owners[victimIP]
		var others []netip.Addr
		var survivors []uint8
		for _, id := range all3 {
			if id != victim {
				survivors = append(survivors, id)
			}
		}
		for _, ip := range victimCl.IPs {
			if owners[ip] != victim {
				others = append(others, ip)
			}
		}
		if victim == 0 || len(others) == 0 {
			t.Fatalf("every client address maps to host %d (hash seed): %v", victim, owners)
		}
		// Connections to the surviving hosts run throughout.
		var otherFail, otherOK atomic.Int64
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, ip := range others {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, _, err := victimCl.Get(ip, cluster.PortSticky, 4*time.Second); err != nil {
						otherFail.Add(1)
					} else {
						otherOK.Add(1)
					}
					time.Sleep(10 * time.Millisecond)
				}
			}()
		}
		time.Sleep(500 * time.Millisecond)
		c.Kill(victim)
		c.Isolate(victim, true)
		killed := time.Now()
		// Probe the victim's bucket with short timeouts until it answers.
		var recovered time.Duration
		for time.Since(killed) < 20*time.Second {
			id, _, err := victimCl.Get(victimIP, cluster.PortSticky, 300*time.Millisecond)
			if err == nil {
				if id == victim {
					t.Fatalf("killed and isolated host %d answered", victim)
				}
				recovered = time.Since(killed)
				break
			}
		}
		close(stop)
		wg.Wait()
		if recovered == 0 {
			t.Fatalf("host %d's buckets never recovered", victim)
		}
		if _, err := c.WaitConverged(survivors, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("failover: new connections in the failed host's buckets succeed %v after kill -9 (heartbeat 100ms × 10)", recovered.Round(time.Millisecond))
		t.Logf("surviving hosts: %d connections, %d failed", otherOK.Load(), otherFail.Load())
		if otherFail.Load() != 0 {
			t.Errorf("%d connections to surviving hosts failed", otherFail.Load())
		}
	})
}

// TestPlannedChanges: a join, a weight change, a rule drain and a
// drainstop, with 500 long-lived connections open across all of them and
// new connections throughout: no reset, no stall, no failed connection.
// A disabled rule drops its traffic and comes back when enabled.
func TestPlannedChanges(t *testing.T) {
	eachMode(t, modes, func(t *testing.T, mode string) {
		// drainstop waits for connections to end: its timeout must outlast them.
		c := cluster.New(t, cluster.Options{Mode: mode, DrainTimeout: 2 * time.Minute})
		startAll(t, c, []uint8{1, 2})
		ll := openLongLived(t, c, 500)
		ld := startLoad(c, 8, cluster.PortHTTP)
		step := func(what string, f func()) {
			t.Logf("%s step: %s", time.Now().Format("15:04:05.000"), what)
			f()
			time.Sleep(time.Second)
		}
		step("host 3 joins", func() {
			c.Start(3)
			if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
				t.Fatal(err)
			}
		})
		step("host 1's weight 50 → 100 (reload)", func() {
			c.SetWeight(1, 100)
			if _, err := c.Local(1, remote.CmdReload, remote.Args{}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
				t.Fatal(err)
			}
		})
		step("rule echo drained on host 2, then enabled", func() {
			if _, err := c.Local(2, remote.CmdDrain, remote.Args{Rule: "echo"}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Second)
			if _, err := c.Local(2, remote.CmdEnable, remote.Args{Rule: "echo"}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
				t.Fatal(err)
			}
		})
		step("rule sticky disabled everywhere: its traffic is dropped; enabled again", func() {
			for _, id := range all3 {
				if _, err := c.Local(id, remote.CmdDisable, remote.Args{Rule: "sticky"}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Second)
			cl := c.Clients[0]
			if id, _, err := cl.Get(cl.IPs[0], cluster.PortSticky, 1500*time.Millisecond); err == nil {
				t.Errorf("disabled rule: host %d answered", id)
			}
			for _, id := range all3 {
				if _, err := c.Local(id, remote.CmdEnable, remote.Args{Rule: "sticky"}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
				t.Fatal(err)
			}
			if _, _, err := cl.Get(cl.IPs[0], cluster.PortSticky, 3*time.Second); err != nil {
				t.Errorf("re-enabled rule: %v", err)
			}
		})
		step("host 2 drainstops", func() {
			if _, err := c.Local(2, remote.CmdDrainStop, remote.Args{}); err != nil {
				t.Fatal(err)
			}
			// Host 2 stays a member, with no buckets, while it drains.
			if q, err := c.Query(2); err != nil || q.State != "draining" {
				t.Fatalf("host 2 after drainstop: %+v %v", q, err)
			}
		})
		time.Sleep(2 * time.Second)
		ld.finish(t, "new connections")
		// Host 2 takes no new connections, and drains once its own end.
		for range 20 {
			cl := c.Clients[0]
			if id, _, err := cl.Get(cl.IPs[1], cluster.PortHTTP, 3*time.Second); err != nil || id == 2 {
				t.Errorf("after drainstop: host %d, %v", id, err)
			}
		}
		ll.finish(t, "long-lived")
		deadline := time.Now().Add(10 * time.Second)
		for {
			q, err := c.Query(2)
			if err == nil && q.State == "stopped" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("host 2 did not stop after its connections ended: %+v %v", q, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
}

// TestAgentRestart: an agent restarted under load, after SIGTERM (leaves
// by drainstop, then rejoins) and after SIGKILL (the pinned data plane
// keeps filtering; the new agent adopts it), fails no connection; the
// long-lived connections held by the killed agent's host survive.
func TestAgentRestart(t *testing.T) {
	eachMode(t, modes, func(t *testing.T, mode string) {
		c := cluster.New(t, cluster.Options{Mode: mode})
		startAll(t, c, all3)
		ld := startLoad(c, 8, cluster.PortHTTP)
		time.Sleep(500 * time.Millisecond)

		t.Log("SIGTERM host 2, then start it")
		c.Signal(2, syscall.SIGTERM)
		if err := c.Wait(2, 20*time.Second); err != nil {
			t.Fatalf("host 2 after SIGTERM: %v", err)
		}
		if _, err := c.WaitConverged([]uint8{1, 3}, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		c.Start(2)
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		ld.finish(t, "SIGTERM and start")

		ll := openLongLived(t, c, 200)
		ld = startLoad(c, 8, cluster.PortHTTP)
		time.Sleep(500 * time.Millisecond)
		t.Log("SIGKILL host 3, then start it")
		c.Kill(3)
		time.Sleep(300 * time.Millisecond)
		c.Start(3)
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		ld.finish(t, "SIGKILL and start")
		ll.finish(t, "long-lived across SIGKILL and start")
	})
}

// TestRemoteControl: from a client namespace, nlbctl --cluster VIP query
// gets a row per host; drainstop and start on one host change its state;
// disable/enable change a rule; a wrong key and a replayed datagram are
// refused and counted.
func TestRemoteControl(t *testing.T) {
	eachMode(t, modes, func(t *testing.T, mode string) {
		c := cluster.New(t, cluster.Options{Mode: mode})
		startAll(t, c, all3)
		nlbctl := buildNlbctl(t)
		cl := c.Clients[0]
		run := func(wantCode int, args ...string) string {
			t.Helper()
			full := append([]string{"--net=" + cl.NS.Path(), "--", nlbctl, "--cluster", cluster.VIP.String(), "--key-file", c.KeyFile}, args...)
			out, err := exec.Command("nsenter", full...).CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != wantCode {
				t.Fatalf("nlbctl %v: exit %d, want %d:\n%s", args, code, wantCode, out)
			}
			return string(out)
		}
		out := run(0, "query")
		t.Logf("nlbctl query:\n%s", out)
		for _, row := range []string{"\n1 ", "\n2 ", "\n3 "} {
			if !strings.Contains(out, row) {
				t.Fatalf("query lacks a row for host%s", row)
			}
		}
		// One host by its dedicated IP: one row.
		full0 := []string{"--net=" + cl.NS.Path(), "--", nlbctl, "--host", cluster.HostIP(2).String(), "--key-file", c.KeyFile, "query"}
		if out, err := exec.Command("nsenter", full0...).CombinedOutput(); err != nil || strings.Count(string(out), "\n") != 2 || !strings.Contains(string(out), "\n2 ") {
			t.Fatalf("--host query: %v:\n%s", err, out)
		}
		out = run(0, "watch", "--count", "2", "--interval", "300ms")
		t.Logf("nlbctl watch --count 2:\n%s", out)
		if strings.Count(out, "HOST  STATE") != 2 || !strings.Contains(out, "33.") {
			t.Errorf("watch: want two frames with a third of the buckets per host:\n%s", out)
		}
		out = run(0, "--target", "1", "params")
		t.Logf("nlbctl params:\n%s", out)
		if !strings.Contains(out, `"web"`) || !strings.Contains(out, `heartbeat_period  "100ms"`) {
			t.Errorf("params lacks the rules or period:\n%s", out)
		}
		out = run(0, "--target", "1", "ip2mac")
		t.Logf("nlbctl ip2mac:\n%s", out)
		want := map[string]string{"unicast": "02:bf:c6:12:00:64", "multicast": "03:bf:c6:12:00:64"}[mode]
		if !strings.Contains(out, `cluster_mac    "`+want+`"`) {
			t.Errorf("ip2mac: want cluster_mac %s:\n%s", want, out)
		}
		if mode == "unicast" && !strings.Contains(out, `host_mac       "02:01:c6:12:00:64"`) {
			t.Errorf("ip2mac: want host 1's masked MAC:\n%s", out)
		}
		out = run(0, "filter", "--client", "198.18.0.200:40000", "--vip", "198.18.0.100:80")
		t.Logf("nlbctl filter:\n%s", out)
		if strings.Count(out, "accept ") != 1 || !strings.Contains(out, "accepted  by host ") {
			t.Errorf("live filter: want exactly one accepting host:\n%s", out)
		}
		run(0, "--target", "2", "drainstop")
		waitState(t, c, 2, "stopped")
		run(0, "--target", "2", "start")
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		run(0, "disable", "sticky")
		if id, _, err := cl.Get(cl.IPs[0], cluster.PortSticky, 1500*time.Millisecond); err == nil {
			t.Errorf("disabled rule answered by host %d", id)
		}
		run(0, "enable", "sticky")
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if out := run(4, "disable", "no-such-rule"); !strings.Contains(out, "no port rule") {
			t.Errorf("bad rule: %s", out)
		}
		// Wrong key: no answer at all (exit 3), counted, nothing changed.
		// nlbctl sends the same datagram again while nobody answers, so
		// each host counts between 1 and 1+remote.Resends copies.
		bad := filepath.Join(t.TempDir(), "bad.key")
		os.WriteFile(bad, []byte("this is not the cluster key, but 32+ bytes"), 0o600)
		full := []string{"--net=" + cl.NS.Path(), "--", nlbctl, "--cluster", cluster.VIP.String(), "--key-file", bad, "--timeout", "1s", "stop"}
		if err := exec.Command("nsenter", full...).Run(); err == nil || err.(*exec.ExitError).ExitCode() != 3 {
			t.Fatalf("wrong key: %v, want exit 3 (no answer)", err)
		}
		// Replay: a valid datagram sent twice is executed once.
		b, err := remote.Marshal(&remote.Message{Kind: remote.KindRequest, Command: remote.CmdQuery, Role: remote.RoleAdmin,
			Dest: cluster.VIP, Timestamp: time.Now().UnixNano(), Nonce: [16]byte{9, 9, 9}, RequestID: 99}, &c.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.NS.Do(func() error {
			conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(cluster.VIP, remote.DefaultPort)))
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.Write(b)
			time.Sleep(200 * time.Millisecond)
			_, err = conn.Write(b)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		for _, id := range all3 {
			q, err := c.Query(id)
			if err != nil {
				t.Fatal(err)
			}
			if q.State == "stopped" {
				t.Errorf("host %d stopped by a request with the wrong key", id)
			}
			if n := q.RemoteRefused["bad-auth"]; n < 1 || n > 1+remote.Resends || q.RemoteRefused["replay"] != 1 {
				t.Errorf("host %d refusals %v, want bad-auth 1..%d and replay 1", id, q.RemoteRefused, 1+remote.Resends)
			}
		}
	})
}

func waitState(t *testing.T, c *cluster.Cluster, id uint8, states ...string) {
	t.Helper()
	waitStateFor(t, c, id, 10*time.Second, states...)
}

// waitStateFor waits up to d for host id to reach one of states.
func waitStateFor(t *testing.T, c *cluster.Cluster, id uint8, d time.Duration, states ...string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if q, err := c.Query(id); err == nil && slices.Contains(states, q.State) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("host %d never reached %v", id, states)
}

func buildNlbctl(t *testing.T) string {
	out := filepath.Join(t.TempDir(), "nlbctl")
	cmd := exec.Command("go", "build", "-o", out, "../cmd/nlbctl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build nlbctl: %v: %s", err, b)
	}
	return out
}
