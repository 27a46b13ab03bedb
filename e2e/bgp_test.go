//go:build linux

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// The scale-out test's addresses: the service VIP both clusters serve,
// each cluster's own next-hop VIP on its segment, the router's addresses,
// and the clients beyond the router.
var (
	serviceVIP = netip.MustParseAddr("198.19.200.1")
	nextHopA   = netip.MustParseAddr("198.18.0.100")
	nextHopB   = netip.MustParseAddr("198.18.1.100")
	routerA    = netip.MustParseAddr("198.18.0.254")
	routerB    = netip.MustParseAddr("198.18.1.254")
	routerC    = netip.MustParseAddr("198.19.0.1")
)

// router is FRR (zebra and bgpd from Debian's package) in a namespace.
type router struct {
	ns  *netns.NS
	dir string
}

// vtysh runs an FRR command on the router.
func (r *router) vtysh(t *testing.T, cmd string) string {
	t.Helper()
	out, err := exec.Command("vtysh", "--vty_socket", r.dir, "-c", cmd).CombinedOutput()
	if err != nil {
		t.Logf("vtysh %q: %v: %s", cmd, err, out)
	}
	return string(out)
}

// nexthops returns the gateways of the router's kernel route to dst.
func (r *router) nexthops(t *testing.T, dst netip.Addr) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	r.ns.Do(func() error {
		list, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: &net.IPNet{IP: dst.AsSlice(), Mask: net.CIDRMask(32, 32)}}, netlink.RT_FILTER_DST)
		if err != nil {
			return err
		}
		for _, rt := range list {
			if rt.Gw != nil {
				a, _ := netip.AddrFromSlice(rt.Gw.To4())
				out = append(out, a)
			}
			for _, nh := range rt.MultiPath {
				a, _ := netip.AddrFromSlice(nh.Gw.To4())
				out = append(out, a)
			}
		}
		return nil
	})
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}

// neighbour returns the router's neighbour entry state for addr and its
// MAC (0 and nil: none).
func (r *router) neighbour(t *testing.T, addr netip.Addr) (int, net.HardwareAddr) {
	t.Helper()
	var state int
	var mac net.HardwareAddr
	if err := r.ns.Do(func() error {
		neighs, err := netlink.NeighList(0, netlink.FAMILY_V4)
		for _, n := range neighs {
			if n.IP.Equal(addr.AsSlice()) {
				state, mac = n.State, n.HardwareAddr
			}
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return state, mac
}

// waitPaths waits until the router's BGP table holds n paths to dst.
func (r *router) waitPaths(t *testing.T, dst netip.Addr, n int, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var res struct {
			Paths []json.RawMessage `json:"paths"`
		}
		out := r.vtysh(t, "show bgp ipv4 unicast "+dst.String()+"/32 json")
		if json.Unmarshal([]byte(out), &res) == nil && len(res.Paths) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the router has %d paths to %v, want %d:\n%s", len(res.Paths), dst, n, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitNexthops waits up to d until the router's route to dst goes via
// exactly want, and returns how long that took.
func (r *router) waitNexthops(t *testing.T, dst netip.Addr, d time.Duration, want ...netip.Addr) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := r.nexthops(t, dst)
		if slices.Equal(got, want) {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("router's route to %v goes via %v after %v, want %v\n%s", dst, got, d, want, r.vtysh(t, "show bgp ipv4 unicast"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const frrConf = `frr defaults traditional
hostname nlb-test-router
log file %[1]s/frr.log
!
router bgp 65000
 bgp router-id 198.19.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp bestpath as-path multipath-relax
%[2]s address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
!
`

// startRouter starts FRR in ns with sessions to hosts 1-3 (AS 65001, on
// segment A) and 4-6 (AS 65002, on segment B), TCP MD5 with password
// and TTL security.
func startRouter(t *testing.T, ns *netns.NS, password string) *router {
	t.Helper()
	dir, err := os.MkdirTemp("", netns.Prefix+"-frr-")
	if err != nil {
		t.Fatal(err)
	}
	r := &router{ns: ns, dir: dir}
	var nb strings.Builder
	for id := 1; id <= 6; id++ {
		addr, as := fmt.Sprintf("198.18.0.%d", id), 65001
		if id > 3 {
			addr, as = fmt.Sprintf("198.18.1.%d", id), 65002
		}
		fmt.Fprintf(&nb, " neighbor %s remote-as %d\n neighbor %s password %s\n neighbor %s ttl-security hops 1\n neighbor %s timers connect 2\n",
			addr, as, addr, password, addr, addr)
	}
	conf := filepath.Join(dir, "frr.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(frrConf, dir, nb.String())), 0o640)
	// FRR's daemons run as its user, which must own their directory.
	if out, err := exec.Command("chown", "-R", "frr:frr", dir).CombinedOutput(); err != nil {
		t.Fatalf("chown: %v: %s", err, out)
	}
	t.Cleanup(func() {
		for _, d := range []string{"bgpd", "zebra"} {
			if b, err := os.ReadFile(filepath.Join(dir, d+".pid")); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					exec.Command("kill", strconv.Itoa(pid)).Run()
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "frr.log"))
			t.Logf("frr.log:\n%s", lastLines(string(b), 40))
		}
		os.RemoveAll(dir)
	})
	for _, d := range []string{"zebra", "bgpd"} {
		// nsenter enters the network namespace only (ip netns exec would
		// also remount /sys and, on first use, /run/netns).
		cmd := exec.Command("nsenter", "--net="+ns.Path(), "--", "/usr/lib/frr/"+d, "-d", "-N", netns.Prefix,
			"-f", conf, "-i", filepath.Join(dir, d+".pid"), "-z", filepath.Join(dir, "zserv.api"), "--vty_socket", dir)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("start %s: %v: %s", d, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	return r
}

// TestBGPScaleOut: two 3-host clusters on separate segments behind a
// router (FRR), both announcing one service VIP over BGP (TCP MD5, TTL
// security); clients beyond the router. The router installs both
// clusters' routes as ECMP; new connections spread over both clusters,
// each answered (no failure); a whole cluster stopped withdraws its route
// and the other serves every new connection; started again, it is back.
// The router's BGP going down does not disturb the cluster's own serving.
func TestBGPScaleOut(t *testing.T) {
	netns.RequireRoot(t)
	for _, bin := range []string{"/usr/lib/frr/bgpd", "/usr/lib/frr/zebra"} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("FRR is needed for the BGP test (make deps installs it): %v", err)
		}
	}
	dir := t.TempDir()
	pw := filepath.Join(dir, "bgp.password")
	os.WriteFile(pw, []byte("nlb-test-md5"), 0o600)
	bgpSection := func(as int, router netip.Addr) string {
		return fmt.Sprintf("  bgp:\n    local_as: %d\n    hold_time: 3s\n    peers:\n      - {address: %s, as: 65000, password_file: %s, ttl_security: true}\n", as, router, pw)
	}
	a := cluster.New(t, cluster.Options{Clients: 1, VIPs: []netip.Addr{nextHopA, serviceVIP}, Gateway: routerA,
		HostExtra: bgpSection(65001, routerA)})
	b := cluster.New(t, cluster.Options{Clients: 1, Tag: "b", Net: 1, FirstID: 4, VIPs: []netip.Addr{nextHopB, serviceVIP},
		Gateway: routerB, HostExtra: bgpSection(65002, routerB), Nlbd: a.Opts.Nlbd})

	// The router: a leg on each segment, one towards the clients.
	rns := netns.New(t, "rtr")
	netns.Plug(t, a.Switch, rns, netns.Prefix+"ra", routerA.String()+"/24")
	netns.Plug(t, b.Switch, rns, netns.Prefix+"rb", routerB.String()+"/24")
	cns := netns.New(t, "cli")
	netns.Veth(t, rns, netns.Prefix+"rc", routerC.String()+"/24", cns, netns.Prefix+"cl", "198.19.0.2/24")
	var clientIPs []netip.Addr
	if err := cns.Do(func() error {
		l, err := netlink.LinkByName(netns.Prefix + "cl")
		if err != nil {
			return err
		}
		for k := 3; k < 11; k++ {
			ip := netip.AddrFrom4([4]byte{198, 19, 0, byte(k)})
			if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(24, 32)}}); err != nil {
				return err
			}
			clientIPs = append(clientIPs, ip)
		}
		return netlink.RouteAdd(&netlink.Route{Gw: routerC.AsSlice()})
	}); err != nil {
		t.Fatal(err)
	}
	// ECMP by the 5-tuple of each packet's headers: policy 3 with the
	// five fields (policy 1 would take a packet's L4 hash when it carries
	// one, here the client socket's, as client and router share a kernel).
	if err := rns.Do(func() error {
		for _, kv := range [][2]string{{"net/ipv4/ip_forward", "1"}, {"net/ipv4/fib_multipath_hash_fields", "0x0037"},
			{"net/ipv4/fib_multipath_hash_policy", "3"}} {
			k, v := kv[0], kv[1]
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	rt := startRouter(t, rns, "nlb-test-md5")
	idsA, idsB := []uint8{1, 2, 3}, []uint8{4, 5, 6}
	a.StartAll(idsA)
	b.StartAll(idsB)
	d := rt.waitNexthops(t, serviceVIP, 30*time.Second, nextHopA, nextHopB)
	t.Logf("both clusters' routes installed as ECMP %v after %v", rt.nexthops(t, serviceVIP), d.Round(time.Millisecond))
	// Every speaker's path: until the router has them all, each arriving
	// one is a routing update (a route reinstalled can rehash the flows
	// in flight over the next hops, which breaks them; docs/scale-out.md).
	rt.waitPaths(t, serviceVIP, 6, 30*time.Second)
	// The router knows each next hop's MAC before the first flow: the
	// hosts asked it for its own from the next hop. (Linux skips a next
	// hop of a group whose neighbour is not resolved: the first packets
	// of flows hashed to that cluster would go to the other one, and
	// their later packets, once it resolved, to the right one, which
	// resets them; docs/scale-out.md.)
	for _, nh := range []netip.Addr{nextHopA, nextHopB} {
		state, mac := rt.neighbour(t, nh)
		if state&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE|netlink.NUD_PERMANENT) == 0 ||
			!strings.HasPrefix(mac.String(), "02:bf:") {
			t.Errorf("router: next hop %v not resolved to its cluster MAC before any flow: state %#x, MAC %v", nh, state, mac)
		}
	}

	// New connections from beyond the router: every one answered, both
	// clusters serving a share.
	spread := func(n int, what string) map[uint8]int {
		t.Helper()
		per := map[uint8]int{}
		var failed atomic.Int64
		var errs []string
		var mu = make(chan struct{}, 1)
		mu <- struct{}{}
		fail := func(src netip.Addr, err error) {
			failed.Add(1)
			<-mu
			if len(errs) < 5 {
				errs = append(errs, fmt.Sprintf("%s from %v: %v", time.Now().Format("15:04:05.000"), src, err))
			}
			mu <- struct{}{}
		}
		parallel(n, 8, func(i int) {
			src := clientIPs[i%len(clientIPs)]
			var conn net.Conn
			err := cns.Do(func() (err error) {
				d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
				conn, err = d.Dial("tcp4", netip.AddrPortFrom(serviceVIP, cluster.PortHTTP).String())
				return err
			})
			if err != nil {
				fail(src, err)
				return
			}
			defer conn.Close()
			id, err := cluster.HTTPHost(conn, 3*time.Second)
			if err != nil {
				fail(src, fmt.Errorf("%v: %w", conn.LocalAddr(), err))
				return
			}
			<-mu
			per[id]++
			mu <- struct{}{}
		})
		total := 0
		for _, c := range per {
			total += c
		}
		t.Logf("%s: %d connections, %d failed, per host %v", what, n, failed.Load(), per)
		if failed.Load() != 0 || total != n {
			t.Errorf("%s: %d of %d connections failed: %v", what, failed.Load(), n, errs)
		}
		return per
	}
	clusterShare := func(per map[uint8]int, ids []uint8) int {
		n := 0
		for _, id := range ids {
			n += per[id]
		}
		return n
	}
	const n = 600
	per := spread(n, "both clusters announced")
	if ca, cb := clusterShare(per, idsA), clusterShare(per, idsB); ca < n/5 || cb < n/5 {
		t.Errorf("ECMP spread: cluster A %d, cluster B %d of %d connections", ca, cb, n)
	}
	for _, id := range append(idsA, idsB...) {
		if per[id] == 0 {
			t.Errorf("host %d answered no connection", id)
		}
	}

	// The speaker's view, in query and the metrics.
	q, err := a.Query(1)
	if err != nil || q.BGP == nil || !slices.Equal(q.BGP.Announced, []string{serviceVIP.String()}) || q.BGP.Peers[routerA.String()] != "established" {
		t.Errorf("host 1's bgp status: %+v %v", q.BGP, err)
	}
	if m, err := a.Metrics(2); err != nil {
		t.Error(err)
	} else if v, _ := m.Value("nlb_bgp_session_up", "peer", routerA.String()); v != 1 {
		t.Errorf("nlb_bgp_session_up = %v", v)
	} else if v, _ := m.Value("nlb_bgp_announced_routes"); v != 1 {
		t.Errorf("nlb_bgp_announced_routes = %v", v)
	}

	// One host of cluster A stopped: it withdraws its path, the others
	// keep the cluster's route, through their convergence (the route
	// never loses cluster A's next hop, checked every 10 ms).
	watch := make(chan struct{})
	var lost atomic.Int64
	go func() {
		defer close(watch)
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			if !slices.Contains(rt.nexthops(t, serviceVIP), nextHopA) {
				lost.Add(1)
			}
		}
	}()
	if _, err := a.Local(1, remote.CmdStop, remote.Args{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, a, 1, "stopped")
	<-watch
	if lost.Load() != 0 {
		t.Errorf("one host of A stopped: cluster A's route was missing in %d checks", lost.Load())
	}
	if q, err := a.Query(1); err != nil || q.BGP == nil || len(q.BGP.Announced) != 0 || !strings.Contains(q.NotesLine(), "bgp: nothing announced") {
		t.Errorf("stopped host 1's bgp status: %+v %v", q.BGP, err)
	}
	if r, err := a.Local(1, remote.CmdEvents, remote.Args{}); err != nil || !strings.Contains(string(r.Result), "announced "+serviceVIP.String()+"/32 via "+nextHopA.String()) ||
		!strings.Contains(string(r.Result), "withdrew "+serviceVIP.String()+"/32") {
		t.Errorf("host 1's events lack the announcement and the withdrawal: %v %s", err, r.Result)
	}

	// Cluster A stopped as a whole: its route is withdrawn and cluster B
	// serves every new connection.
	for _, id := range idsA {
		if _, err := a.Local(id, remote.CmdStop, remote.Args{}); err != nil {
			t.Fatal(err)
		}
	}
	// Within the hold time: the withdrawal, not the router's timeout.
	d = rt.waitNexthops(t, serviceVIP, 3*time.Second, nextHopB)
	t.Logf("cluster A stopped: its route withdrawn from the router's table %v after the stop commands (heartbeat period 100ms)", d.Round(time.Millisecond))
	per = spread(n/2, "cluster A withdrawn")
	if ca := clusterShare(per, idsA); ca != 0 {
		t.Errorf("cluster A answered %d connections after it withdrew", ca)
	}

	// Started again: announced again, both clusters serve.
	for _, id := range idsA {
		if _, err := a.Local(id, remote.CmdStart, remote.Args{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.WaitConverged(idsA, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	d = rt.waitNexthops(t, serviceVIP, 15*time.Second, nextHopA, nextHopB)
	t.Logf("cluster A started: announced again %v after it converged", d.Round(time.Millisecond))
	per = spread(n/2, "both clusters again")
	if ca, cb := clusterShare(per, idsA), clusterShare(per, idsB); ca == 0 || cb == 0 {
		t.Errorf("after the restore: cluster A %d, cluster B %d", ca, cb)
	}

	// The operator drains the whole of cluster A (drainstop on every
	// host): it withdraws as soon as its hosts drain, then comes back.
	for _, id := range idsA {
		if _, err := a.Local(id, remote.CmdDrainStop, remote.Args{}); err != nil {
			t.Fatal(err)
		}
	}
	d = rt.waitNexthops(t, serviceVIP, 3*time.Second, nextHopB)
	t.Logf("cluster A drained: withdrawn %v after the drainstop commands", d.Round(time.Millisecond))
	for _, id := range idsA {
		waitStateFor(t, a, id, 30*time.Second, "stopped")
		if _, err := a.Local(id, remote.CmdStart, remote.Args{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.WaitConverged(idsA, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	rt.waitNexthops(t, serviceVIP, 15*time.Second, nextHopA, nextHopB)

	// A speaker the router refuses (a wrong password on host 6): its
	// session never comes up, host 6 serves its share of cluster B all
	// the same, and cluster B's route stays (hosts 4 and 5 announce it).
	bad := filepath.Join(dir, "wrong.password")
	os.WriteFile(bad, []byte("not-the-password"), 0o600)
	cfg6, _ := os.ReadFile(b.Hosts[6].Config)
	os.WriteFile(b.Hosts[6].Config, []byte(strings.Replace(string(cfg6), pw, bad, 1)), 0o600)
	b.Signal(6, syscall.SIGTERM)
	if err := b.Wait(6, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	b.Start(6)
	if _, err := b.WaitConverged(idsB, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if q, err := b.Query(6); err != nil || q.BGP == nil || q.BGP.Peers[routerB.String()] == "established" {
		t.Errorf("host 6 with a wrong password: %+v %v", q, err)
	} else {
		t.Logf("host 6 with a wrong password: %s", q.NotesLine())
	}
	per = spread(n/2, "host 6's session refused")
	if per[6] == 0 || !slices.Equal(rt.nexthops(t, serviceVIP), []netip.Addr{nextHopA, nextHopB}) {
		t.Errorf("host 6 refused by the router: it answered %d connections; route via %v", per[6], rt.nexthops(t, serviceVIP))
	}

	// The router's BGP dies: sessions drop, the clusters go on serving on
	// their own segments (cluster A's own client, its first VIP).
	ld := startLoad(a, 2, cluster.PortHTTP)
	if b, err := os.ReadFile(filepath.Join(rt.dir, "bgpd.pid")); err == nil {
		exec.Command("kill", "-9", strings.TrimSpace(string(b))).Run()
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		q, err := a.Query(1)
		if err == nil && q.BGP != nil && q.BGP.Peers[routerA.String()] != "established" {
			t.Logf("host 1 after the router's bgpd died: %s", q.NotesLine())
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host 1 still reports its session established: %+v", q.BGP)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	ld.finish(t, "cluster A's own traffic while its router's BGP is down")
	for _, id := range idsA {
		if q, err := a.Query(id); err != nil || q.State == "refused" || len(q.Members) != 3 {
			t.Errorf("host %d after the router's BGP died: %+v %v", id, q, err)
		}
	}
}
