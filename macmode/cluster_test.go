//go:build linux

package macmode_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/filter/datapath"
	inetns "github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/macmode/nic"
)

var (
	vip  = netip.MustParseAddr("198.18.0.100")
	vip6 = netip.MustParseAddr("2001:2::100")
	vips = []netip.Addr{vip, vip6}
)

// addAddr6 puts an IPv6 address on ifname in ns, without duplicate
// address detection (the test must not wait for it).
func addAddr6(t *testing.T, ns *inetns.NS, ifname, prefix string) {
	h := ns.Netlink(t)
	l, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatal(err)
	}
	a, err := netlink.ParseAddr(prefix)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = unix.IFA_F_NODAD
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatal(err)
	}
}

type segment struct {
	sw, client *inetns.NS
	hosts      []*inetns.NS
	cName      string
	hostIf     []string
	responders []*macmode.Responder
	ndps       []*macmode.NDPResponder
}

// cluster builds a bridge with n hosts in the given mode and a client.
func cluster(t *testing.T, mode macmode.Mode, n int) *segment {
	seg := &segment{sw: inetns.Switch(t, "")}
	tag := string(mode)[:1]
	seg.client = inetns.New(t, tag+"cl")
	seg.cName = inetns.Prefix + tag + "cl"
	inetns.Plug(t, seg.sw, seg.client, seg.cName, "198.18.0.50/24")
	addAddr6(t, seg.client, seg.cName, "2001:2::50/64")
	for i := 1; i <= n; i++ {
		ns := inetns.New(t, fmt.Sprintf("%sh%d", tag, i))
		ifname := fmt.Sprintf("%s%sh%d", inetns.Prefix, tag, i)
		inetns.Plug(t, seg.sw, ns, ifname, fmt.Sprintf("198.18.0.%d/24", i))
		addAddr6(t, ns, ifname, fmt.Sprintf("2001:2::%d/64", i))
		seg.hosts, seg.hostIf = append(seg.hosts, ns), append(seg.hostIf, ifname)
		id := uint8(i)
		if mode == macmode.Unicast {
			// The egress program masks the cluster MAC in source addresses.
			cmac, _ := macmode.UnicastMAC(vip)
			mmac, _ := macmode.MaskedMAC(vip, id)
			d, err := datapath.Load(datapath.DatapathOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { d.Close() })
			l, _ := ns.Netlink(t).LinkByName(ifname)
			if err := ns.Do(func() error { return d.Attach(l.Attrs().Index) }); err != nil {
				t.Fatal(err)
			}
			if err := d.Update(&filter.State{VIPs: vips}, datapath.Egress{Mask: true, ClusterMAC: [6]byte(cmac), MaskedMAC: [6]byte(mmac)}); err != nil {
				t.Fatal(err)
			}
		}
		// As the agent does it: the data plane (and its egress mask)
		// first, then the NIC; unicast setup's announcement of the host's
		// address at the cluster MAC must leave masked too.
		cfg := nic.Config{Mode: mode, Interface: ifname, VIPs: vips, StateFile: filepath.Join(t.TempDir(), "state")}
		if err := ns.Do(func() error { return nic.Setup(cfg) }); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := ns.Do(func() error { return nic.Restore(cfg.StateFile, cfg.Interface) }); err != nil {
				t.Error(err)
			}
		})
		if mode != macmode.Unicast {
			mac, _ := macmode.MulticastMAC(vip)
			if mode == macmode.IGMP {
				mac, _ = macmode.IGMPMAC(vip)
			}
			var r *macmode.Responder
			if err := ns.Do(func() (err error) { r, err = macmode.NewResponder(ifname, vips, mac); return }); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done; r.Close() })
			seg.responders = append(seg.responders, r)

			mac6 := mac
			if mode == macmode.IGMP {
				mac6, _ = macmode.IGMPMAC6(vip)
			}
			var n *macmode.NDPResponder
			if err := ns.Do(func() (err error) { n, err = macmode.NewNDPResponder(ifname, []netip.Addr{vip6}, mac6); return }); err != nil {
				t.Fatal(err)
			}
			nctx, ncancel := context.WithCancel(context.Background())
			ndone := make(chan error, 1)
			go func() { ndone <- n.Run(nctx) }()
			t.Cleanup(func() { ncancel(); <-ndone; n.Close() })
			seg.ndps = append(seg.ndps, n)
		}
	}
	return seg
}

// resolve makes the client ARP for the VIP and returns the MAC it learnt.
func (seg *segment) resolve(t *testing.T) net.HardwareAddr {
	t.Helper()
	return seg.resolveAddr(t, vip)
}

// resolveAddr makes the client resolve addr (ARP or neighbour discovery)
// and returns the MAC it learnt.
func (seg *segment) resolveAddr(t *testing.T, vip netip.Addr) net.HardwareAddr {
	t.Helper()
	family := unix.AF_INET
	if vip.Is6() {
		family = unix.AF_INET6
	}
	hc := seg.client.Netlink(t)
	cl, _ := hc.LinkByName(seg.cName)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		seg.client.Do(func() error {
			c, err := net.Dial("udp", netip.AddrPortFrom(vip, 9).String())
			if err == nil {
				c.Write([]byte("x"))
				c.Close()
			}
			return nil
		})
		neighs, err := hc.NeighList(cl.Attrs().Index, family)
		if err != nil {
			t.Fatal(err)
		}
		for _, nb := range neighs {
			if nb.IP.Equal(net.IP(vip.AsSlice())) && nb.HardwareAddr != nil && nb.State&(netlink.NUD_REACHABLE|netlink.NUD_STALE|netlink.NUD_DELAY|netlink.NUD_PROBE) != 0 {
				return nb.HardwareAddr
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("the client did not resolve the VIP")
	return nil
}

func TestClusterARP(t *testing.T) {
	inetns.RequireRoot(t)
	for _, mode := range []macmode.Mode{macmode.Unicast, macmode.Multicast, macmode.IGMP} {
		t.Run(string(mode), func(t *testing.T) {
			seg := cluster(t, mode, 3)
			want := map[macmode.Mode]func(netip.Addr) (net.HardwareAddr, error){
				macmode.Unicast: macmode.UnicastMAC, macmode.Multicast: macmode.MulticastMAC, macmode.IGMP: macmode.IGMPMAC,
			}[mode]
			w, _ := want(vip)
			if got := seg.resolve(t); got.String() != w.String() {
				t.Fatalf("client resolved %s to %s, want %s", vip, got, w)
			}
			switch mode {
			case macmode.Unicast:
				// Some traffic, then the switch must not have learnt the
				// cluster MAC (it would stop flooding it to every host).
				for i := 0; i < 20; i++ {
					seg.resolve(t)
				}
				hs := seg.sw.Netlink(t)
				fdb, err := hs.NeighList(0, unix.AF_BRIDGE)
				if err != nil {
					t.Fatal(err)
				}
				masked := 0
				for _, e := range fdb {
					if e.HardwareAddr.String() == w.String() {
						t.Fatalf("the bridge learnt the cluster MAC %s", w)
					}
					if len(e.HardwareAddr) == 6 && e.HardwareAddr[0] == 2 && e.HardwareAddr[1] >= 1 && e.HardwareAddr[1] <= 3 {
						masked++
					}
				}
				if masked == 0 {
					t.Fatalf("no masked source MAC in the fdb: the test saw no host traffic (%d entries)", len(fdb))
				}
			case macmode.Multicast:
				// A Linux client refreshes with a unicast probe to the
				// cluster MAC; it must be answered too.
				before := uint64(0)
				for _, r := range seg.responders {
					before += r.Answered.Load()
				}
				hc := seg.client.Netlink(t)
				cl, _ := hc.LinkByName(seg.cName)
				if err := hc.NeighSet(&netlink.Neigh{LinkIndex: cl.Attrs().Index, IP: net.IP(vip.AsSlice()), HardwareAddr: w, State: netlink.NUD_STALE}); err != nil {
					t.Fatal(err)
				}
				seg.client.Do(func() error {
					return os.WriteFile(fmt.Sprintf("/proc/sys/net/ipv4/neigh/%s/delay_first_probe_time", seg.cName), []byte("0"), 0o644)
				})
				deadline := time.Now().Add(5 * time.Second)
				for {
					seg.resolve(t)
					after := uint64(0)
					for _, r := range seg.responders {
						after += r.Answered.Load()
					}
					if after > before {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the unicast refresh probe was not answered")
					}
					time.Sleep(200 * time.Millisecond)
				}
			}
		})
	}
}

// TestClusterNDP: in each mode a client resolves the IPv6 VIP to the
// mode's cluster MAC — the kernel answers in unicast mode (the VIP on the
// NIC, the NIC at the cluster MAC), the NDP responders in the multicast
// modes (the VIP on lo) — and no host's IPv6 breaks.
func TestClusterNDP(t *testing.T) {
	inetns.RequireRoot(t)
	for _, mode := range []macmode.Mode{macmode.Unicast, macmode.Multicast, macmode.IGMP} {
		t.Run(string(mode), func(t *testing.T) {
			seg := cluster(t, mode, 3)
			want := map[macmode.Mode]func(netip.Addr) (net.HardwareAddr, error){
				macmode.Unicast: macmode.UnicastMAC, macmode.Multicast: macmode.MulticastMAC, macmode.IGMP: macmode.IGMPMAC6,
			}[mode]
			w, _ := want(vip)
			if got := seg.resolveAddr(t, vip6); got.String() != w.String() {
				t.Fatalf("client resolved %s to %s, want %s", vip6, got, w)
			}
			if mode != macmode.Unicast {
				answered := uint64(0)
				for _, n := range seg.ndps {
					answered += n.Answered.Load()
				}
				if answered == 0 {
					t.Fatal("no NDP responder answered")
				}
			}
			// Each host's own IPv6 address still resolves: to the NIC's MAC,
			// which in unicast mode is the cluster MAC.
			for i := range seg.hosts {
				a := netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 15: byte(i + 1)})
				if got := seg.resolveAddr(t, a); (got.String() == w.String()) != (mode == macmode.Unicast) {
					t.Fatalf("host %d's own address %s resolved to %s (cluster MAC %s)", i+1, a, got, w)
				}
			}
		})
	}
}

// TestGratuitousARP: a client that has a wrong entry for the VIP updates it
// when a host announces the VIP.
func TestGratuitousARP(t *testing.T) {
	inetns.RequireRoot(t)
	seg := cluster(t, macmode.Multicast, 1)
	hc := seg.client.Netlink(t)
	cl, _ := hc.LinkByName(seg.cName)
	wrong := net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	if err := hc.NeighSet(&netlink.Neigh{LinkIndex: cl.Attrs().Index, IP: net.IP(vip.AsSlice()), HardwareAddr: wrong, State: netlink.NUD_STALE}); err != nil {
		t.Fatal(err)
	}
	if err := seg.responders[0].Gratuitous(); err != nil {
		t.Fatal(err)
	}
	want, _ := macmode.MulticastMAC(vip)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		neighs, _ := hc.NeighList(cl.Attrs().Index, unix.AF_INET)
		for _, nb := range neighs {
			if nb.IP.Equal(net.IP(vip.AsSlice())) && nb.HardwareAddr.String() == want.String() {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("the client's entry for %s was not updated to %s", vip, want)
}

// TestIGMPSnooping: with a snooping bridge (querier on, cluster ports
// marked multicast-router as docs/operations.md says), frames to the IGMP
// cluster MAC reach the cluster's ports and not an outsider's.
func TestIGMPSnooping(t *testing.T) {
	inetns.RequireRoot(t)
	if testing.Short() {
		t.Skip("waits for the bridge's snooping to start (about 12 s)")
	}
	seg := cluster(t, macmode.IGMP, 2)
	outsider := inetns.New(t, "iout")
	oName := inetns.Prefix + "iout"
	inetns.Plug(t, seg.sw, outsider, oName, "198.18.0.60/24")
	ip := func(args ...string) {
		if out, err := exec.Command(args[0], append([]string{"-n", seg.sw.Name}, args[1:]...)...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out)
		}
	}
	ip("ip", "link", "set", "dev", "br0", "type", "bridge", "mcast_snooping", "1", "mcast_querier", "1")
	for _, h := range seg.hostIf {
		ip("bridge", "link", "set", "dev", "p"+h, "mcast_router", "2")
	}
	// Snooping restricts about 10 s after the querier starts.
	time.Sleep(12 * time.Second)
	mac := seg.resolve(t)
	if want, _ := macmode.IGMPMAC(vip); mac.String() != want.String() {
		t.Fatalf("resolved to %s", mac)
	}
	count := func(ns *inetns.NS, ifname string, send func()) int {
		var fd int
		if err := ns.Do(func() error {
			ifi, err := net.InterfaceByName(ifname)
			if err != nil {
				return err
			}
			if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL))); err != nil {
				return err
			}
			return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index})
		}); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		tv := unix.NsecToTimeval(int64(300 * time.Millisecond))
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		send()
		n, buf := 0, make([]byte, 2048)
		for i := 0; i < 100; {
			m, _, err := unix.Recvfrom(fd, buf, 0)
			if err == unix.EINTR {
				continue // a signal (the Go runtime's preemption among them)
			}
			i++
			if err != nil {
				break
			}
			if m >= 6 && net.HardwareAddr(buf[:6]).String() == mac.String() {
				n++
			}
		}
		return n
	}
	send := func() {
		seg.client.Do(func() error {
			c, err := net.Dial("udp", netip.AddrPortFrom(vip, 9).String())
			if err != nil {
				return err
			}
			defer c.Close()
			for i := 0; i < 10; i++ {
				c.Write([]byte("to the cluster"))
			}
			return nil
		})
	}
	if n := count(seg.hosts[0], seg.hostIf[0], send); n == 0 {
		t.Fatal("a cluster host received no frame to the cluster MAC")
	}
	if n := count(outsider, oName, send); n != 0 {
		t.Fatalf("an outsider's port received %d frames to the cluster MAC", n)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
