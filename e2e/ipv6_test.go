//go:build linux

package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/remote"
)

// load6 opens short HTTP connections to dst(family) until stop, from
// every client address of both families in turn, and counts per family
// and answering host.
type load6 struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	ok     map[string]map[uint8]int // family → host → connections
	failed atomic.Int64
	errs   []string
}

func startLoad6(c *cluster.Cluster, workers int, port uint16, srcs func(cl *cluster.Client, v6 bool) []netip.Addr) *load6 {
	l := &load6{stop: make(chan struct{}), ok: map[string]map[uint8]int{"ipv4": {}, "ipv6": {}}}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				cl := c.Clients[(w+i/2)%len(c.Clients)]
				v6 := i%2 == 1
				ips := srcs(cl, v6)
				if len(ips) == 0 {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				dst, fam := netip.AddrPortFrom(cluster.VIP, port), "ipv4"
				if v6 {
					dst, fam = netip.AddrPortFrom(cluster.VIP6, port), "ipv6"
				}
				id, _, err := cl.GetTo(ips[(w*7+i)%len(ips)], dst, 4*time.Second)
				l.mu.Lock()
				if err != nil {
					l.failed.Add(1)
					if len(l.errs) < 5 {
						l.errs = append(l.errs, fmt.Sprintf("%s: %v", fam, err))
					}
				} else {
					l.ok[fam][id]++
				}
				l.mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return l
}

func (l *load6) finish(t *testing.T, what string) (ok int) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	for _, m := range l.ok {
		for _, n := range m {
			ok += n
		}
	}
	t.Logf("%s: %d connections ok (per family and host %v), %d failed %v", what, ok, l.ok, l.failed.Load(), l.errs)
	if l.failed.Load() != 0 {
		t.Errorf("%s: %d connections failed", what, l.failed.Load())
	}
	return ok
}

func allIPs(cl *cluster.Client, v6 bool) []netip.Addr {
	if v6 {
		return cl.IPs6
	}
	return cl.IPs
}

func requests(c *cluster.Cluster) int64 {
	var n int64
	for _, h := range c.Hosts {
		n += h.Requests.Load()
	}
	return n
}

// TestDualStack: in each MAC mode, a cluster with an IPv4 and an IPv6
// VIP. New connections of both families spread over the hosts, each
// answered by the host the live tables name and exactly once (the
// backends count requests); ICMPv6 echo gets one reply; a join and a
// drainstop under load of both families fail no connection; after a
// kill -9, new connections in the dead host's buckets succeed again and
// none to the survivors fails.
func TestDualStack(t *testing.T) {
	eachMode(t, append(modes, "igmp"), func(t *testing.T, mode string) {
		c := cluster.New(t, cluster.Options{Mode: mode, IPv6: true, ClientIPs: 6})
		startAll(t, c, []uint8{1, 2})

		// Spread, owners and exactly once, both families.
		r0 := requests(c)
		counts := map[string]map[uint8]int{"ipv4": {}, "ipv6": {}}
		var mu sync.Mutex
		var failures, wrong atomic.Int64
		const n = 400
		parallel(n, 16, func(i int) {
			cl := c.Clients[i%len(c.Clients)]
			v6 := i%2 == 1
			dst, fam := netip.AddrPortFrom(cluster.VIP, cluster.PortHTTP), "ipv4"
			if v6 {
				dst, fam = netip.AddrPortFrom(cluster.VIP6, cluster.PortHTTP), "ipv6"
			}
			ips := allIPs(cl, v6)
			id, local, err := cl.GetTo(ips[(i/2)%len(ips)], dst, 3*time.Second)
			if err != nil {
				if failures.Add(1) < 5 {
					t.Errorf("%s connection %d: %v", fam, i, err)
				}
				return
			}
			if own, err := c.OwnerTo(uint8(1+i%2), local, dst, "tcp"); err != nil || own != id {
				if wrong.Add(1) < 5 {
					t.Errorf("%v → %v answered by host %d, tables name %d (%v)", local, dst, id, own, err)
				}
			}
			mu.Lock()
			counts[fam][id]++
			mu.Unlock()
		})
		ok := n - int(failures.Load())
		if got := requests(c) - r0; got != int64(ok) {
			t.Errorf("%d requests answered by the backends for %d connections: not exactly once", got, ok)
		}
		for fam, m := range counts {
			for _, id := range []uint8{1, 2} {
				if m[id] < n/2/4 {
					t.Errorf("%s: host %d answered %d of %d connections", fam, id, m[id], n/2)
				}
			}
		}
		t.Logf("%s: %d connections per family and host %v, %d failed, %d on the wrong host", mode, n, counts, failures.Load(), wrong.Load())

		// A join and a drainstop under load of both families, with
		// long-lived connections of both open throughout (the held-flow
		// handoff: a host keeps the flows it holds in buckets it gives
		// away, and the drainstopping host serves its own to their end).
		ll4 := openLongLivedTo(t, c, 100, false)
		ll6 := openLongLivedTo(t, c, 100, true)
		ld := startLoad6(c, 8, cluster.PortHTTP, allIPs)
		time.Sleep(500 * time.Millisecond)
		c.Start(3)
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		checkEcho(t, c, cluster.VIP6)
		if _, err := c.Local(2, remote.CmdDrainStop, remote.Args{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		ll4.finish(t, "long-lived IPv4")
		ll6.finish(t, "long-lived IPv6")
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if q, err := c.Query(2); err == nil && q.State == "stopped" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("host 2 did not stop after its drain")
			}
		}
		time.Sleep(time.Second)
		ld.finish(t, "join and drainstop")
		if ld.ok["ipv6"][3] == 0 || ld.ok["ipv4"][3] == 0 {
			t.Errorf("the joining host took no connections: %v", ld.ok)
		}

		// Host 2 back (a 2-host cluster whose lowest ID fails stops new
		// flows: docs/operations.md), then kill -9 of the host that owns
		// an IPv6 client address (sticky rule: affinity single);
		// connections from the addresses the others own (both families)
		// run throughout.
		if _, err := c.Local(2, remote.CmdStart, remote.Args{}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		cl := c.Clients[0]
		owner := func(a netip.Addr) uint8 {
			dst := netip.AddrPortFrom(cluster.VIP, cluster.PortSticky)
			if a.Is6() {
				dst = netip.AddrPortFrom(cluster.VIP6, cluster.PortSticky)
			}
			id, err := c.OwnerTo(1, netip.AddrPortFrom(a, 1), dst, "tcp")
			if err != nil {
				t.Fatal(err)
			}
			return id
		}
		victimIP := cl.IPs6[0]
		victim := owner(victimIP)
		others := map[bool][]netip.Addr{}
		for _, a := range append(append([]netip.Addr(nil), cl.IPs...), cl.IPs6...) {
			if owner(a) != victim {
				others[a.Is6()] = append(others[a.Is6()], a)
			}
		}
		if len(others[true]) == 0 || len(others[false]) == 0 {
			t.Fatalf("every client address of some family maps to host %d: %v", victim, others)
		}
		ld = startLoad6(c, 4, cluster.PortSticky, func(k *cluster.Client, v6 bool) []netip.Addr {
			if k != cl {
				return nil
			}
			return others[v6]
		})
		time.Sleep(500 * time.Millisecond)
		c.Kill(victim)
		c.Isolate(victim, true)
		killed := time.Now()
		var recovered time.Duration
		for time.Since(killed) < 20*time.Second {
			id, _, err := cl.GetTo(victimIP, netip.AddrPortFrom(cluster.VIP6, cluster.PortSticky), 300*time.Millisecond)
			if err == nil {
				if id == victim {
					t.Fatalf("killed and isolated host %d answered", victim)
				}
				recovered = time.Since(killed)
				break
			}
		}
		if recovered == 0 {
			t.Fatalf("host %d's IPv6 buckets never recovered", victim)
		}
		time.Sleep(time.Second)
		ld.finish(t, "surviving hosts during the failover")
		if len(ld.ok["ipv4"]) == 0 || len(ld.ok["ipv6"]) == 0 {
			t.Errorf("the load to the survivors missed a family: %v", ld.ok)
		}
		t.Logf("IPv6 failover: new connections in the failed host's buckets succeed %v after kill -9", recovered.Round(time.Millisecond))
	})
}

// TestIPv6Only: a cluster whose only VIP is IPv6 (its primary: the MACs
// and heartbeats carry its last four bytes). Connections spread and are
// answered once, ICMPv6 echo once, and nlbctl reaches every host over
// IPv6 (remote control binds requests to the IPv6 destination).
func TestIPv6Only(t *testing.T) {
	eachMode(t, modes, func(t *testing.T, mode string) {
		c := cluster.New(t, cluster.Options{Mode: mode, IPv6: true, VIPs: []netip.Addr{cluster.VIP6}})
		startAll(t, c, all3)
		r0 := requests(c)
		counts := map[uint8]int{}
		var mu sync.Mutex
		var failures atomic.Int64
		const n = 300
		parallel(n, 16, func(i int) {
			cl := c.Clients[i%len(c.Clients)]
			id, _, err := cl.GetTo(cl.IPs6[(i/2)%len(cl.IPs6)], netip.AddrPortFrom(cluster.VIP6, cluster.PortHTTP), 3*time.Second)
			if err != nil {
				if failures.Add(1) < 5 {
					t.Errorf("connection %d: %v", i, err)
				}
				return
			}
			mu.Lock()
			counts[id]++
			mu.Unlock()
		})
		if got := requests(c) - r0; got != int64(n-int(failures.Load())) {
			t.Errorf("%d requests answered for %d connections: not exactly once", got, n-int(failures.Load()))
		}
		for _, id := range all3 {
			if counts[id] < n/3/3 {
				t.Errorf("host %d answered %d of %d", id, counts[id], n)
			}
		}
		t.Logf("%s: %d IPv6 connections per host %v, %d failed", mode, n, counts, failures.Load())
		checkEcho(t, c, cluster.VIP6)

		nlbctl := buildNlbctl(t)
		cl := c.Clients[0]
		out, err := exec.Command("nsenter", "--net="+cl.NS.Path(), "--", nlbctl, "--cluster", cluster.VIP6.String(), "--key-file", c.KeyFile, "query").CombinedOutput()
		if err != nil {
			t.Fatalf("nlbctl --cluster %s query: %v:\n%s", cluster.VIP6, err, out)
		}
		for _, row := range []string{"\n1 ", "\n2 ", "\n3 "} {
			if !strings.Contains(string(out), row) {
				t.Fatalf("query over IPv6 lacks a row for host%s:\n%s", row, out)
			}
		}
		// One host by its dedicated IPv6 address: one row.
		out, err = exec.Command("nsenter", "--net="+cl.NS.Path(), "--", nlbctl, "--host", cluster.HostIP6(2).String(), "--key-file", c.KeyFile, "query").CombinedOutput()
		if err != nil || strings.Count(string(out), "\n") != 2 || !strings.Contains(string(out), "\n2 ") {
			t.Fatalf("--host %s query: %v:\n%s", cluster.HostIP6(2), err, out)
		}
		out, err = exec.Command("nsenter", "--net="+cl.NS.Path(), "--", nlbctl, "--cluster", cluster.VIP6.String(), "--key-file", c.KeyFile, "--target", "1", "ip2mac").CombinedOutput()
		want := map[string]string{"unicast": "02:bf:00:00:01:00", "multicast": "03:bf:00:00:01:00"}[mode]
		if err != nil || !strings.Contains(string(out), `cluster_mac    "`+want+`"`) {
			t.Errorf("ip2mac over IPv6: want cluster_mac %s: %v\n%s", want, err, out)
		}
	})
}

// TestSetupFailureUnwinds: a setup step that fails after the NIC is set
// up (here, remote control on a dedicated IPv6 address the host does not
// have) ends the agent with that error, and the NIC is as before — the
// unwind ran (it used to dereference the nil session a failed setup
// returns, and panic).
func TestSetupFailureUnwinds(t *testing.T) {
	eachMode(t, []string{"unicast"}, func(t *testing.T, mode string) {
		c := cluster.New(t, cluster.Options{Mode: mode, Hosts: 1, Clients: 1, HostExtra: "  dedicated_ip6: 2001:2::99/64\n"})
		h := c.Hosts[1]
		link := func() string {
			out, err := exec.Command("ip", "-n", h.NS.Name, "link", "show", "dev", h.Ifname).CombinedOutput()
			if err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			return strings.Fields(strings.SplitN(string(out), "link/ether ", 2)[1])[0]
		}
		before := link()
		c.Start(1)
		err := c.Wait(1, 20*time.Second)
		log, _ := os.ReadFile(h.Log)
		if err == nil || !strings.Contains(string(log), "remote control on 2001:2::99") || strings.Contains(string(log), "panic") {
			t.Fatalf("agent exit %v; log:\n%s", err, log)
		}
		if after := link(); after != before {
			t.Fatalf("NIC MAC %s after the failed setup, %s before", after, before)
		}
	})
}
