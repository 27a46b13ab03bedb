//go:build linux

package nic

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlbproject/nlb/macmode"

	"github.com/vishvananda/netns"

	inetns "github.com/nlbproject/nlb/internal/netns"
)

// snapshot is everything of a host namespace that setup may touch.
func snapshot(t *testing.T, ns *inetns.NS, ifname string) string {
	t.Helper()
	var b strings.Builder
	for _, args := range [][]string{
		{"-d", "link", "show", "dev", ifname},
		{"addr", "show"},
		{"maddr", "show", "dev", ifname},
		{"neigh", "show"},
	} {
		out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
		if args[0] == "-d" {
			// iproute2 resolves the veth peer's namespace for display;
			// while other tests create and delete namespaces that lookup
			// can fail ("Peer netns reference is invalid"). It says
			// nothing about what setup changed.
			var keep []string
			for _, l := range strings.Split(string(out), "\n") {
				if !strings.Contains(l, "Peer netns reference is invalid") {
					keep = append(keep, l)
				}
			}
			out = []byte(strings.Join(keep, "\n"))
		}
		if args[0] == "maddr" {
			// The multicast list is a set; re-enabling IPv6 re-adds its
			// groups in another order.
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			sort.Strings(lines[1:])
			out = []byte(strings.Join(lines, "\n") + "\n")
		}
		b.Write(out)
	}
	err := ns.Do(func() error {
		for _, k := range []string{
			"ipv6/conf/" + ifname + "/disable_ipv6",
			"ipv4/conf/" + ifname + "/arp_ignore",
			"ipv4/conf/" + ifname + "/arp_announce",
			"ipv4/conf/" + ifname + "/arp_notify",
			"ipv6/conf/" + ifname + "/ndisc_notify",
		} {
			v, err := os.ReadFile("/proc/sys/net/" + k)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "%s=%s", k, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func hostNS(t *testing.T, name string) (*inetns.NS, string) {
	ns := inetns.New(t, name)
	peer := inetns.New(t, name+"p")
	// No DAD, so IPv6 link-local addresses are stable in snapshots.
	if err := ns.Do(func() error {
		return os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	ifname := inetns.Prefix + name
	inetns.Veth(t, ns, ifname, "198.18.0.1/24", peer, inetns.Prefix+name+"x", "198.18.0.2/24")
	return ns, ifname
}

// linkLocal finds the first IPv6 link-local address in a snapshot.
func linkLocal(snap string) string {
	for _, l := range strings.Split(snap, "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "inet6" && strings.HasPrefix(f[1], "fe80::") {
			return f[1]
		}
	}
	return ""
}

// TestSetupTeardown: for each mode, setup makes the mode's changes,
// teardown restores the namespace exactly, a restore from the state file
// alone (as after SIGKILL) does too, and a failure injected at each step
// leaves the namespace unchanged.
func TestSetupTeardown(t *testing.T) {
	inetns.RequireRoot(t)
	vips := []netip.Addr{netip.MustParseAddr("198.18.0.100"), netip.MustParseAddr("198.18.0.101"), netip.MustParseAddr("2001:2::100")}
	for _, mode := range []macmode.Mode{macmode.Unicast, macmode.Multicast, macmode.IGMP} {
		t.Run(string(mode), func(t *testing.T) {
			ns, ifname := hostNS(t, string(mode)[:3])
			cfg := Config{Mode: mode, Interface: ifname, VIPs: vips, StateFile: filepath.Join(t.TempDir(), "nlb.state")}
			before := snapshot(t, ns, ifname)
			in := func(f func() error) error { return ns.Do(f) }

			if err := in(func() error { return Setup(cfg) }); err != nil {
				t.Fatal(err)
			}
			during := snapshot(t, ns, ifname)
			switch mode {
			case macmode.Unicast:
				if !strings.Contains(during, "link/ether 02:bf:c6:12:00:64") || !strings.Contains(during, "inet 198.18.0.101/32") ||
					!strings.Contains(during, "inet6 2001:2::100/128") || !strings.Contains(during, "ndisc_notify=1") {
					t.Fatalf("unicast setup:\n%s", during)
				}
				// IPv6 stays on, with the host's own link-local address.
				if ll := linkLocal(before); ll == "" || !strings.Contains(during, ll) || strings.Contains(during, "dadfailed") {
					t.Fatalf("unicast setup lost the link-local address %q:\n%s", ll, during)
				}
			case macmode.Multicast:
				if !strings.Contains(during, "link  03:bf:c6:12:00:64") || !strings.Contains(during, "arp_ignore=1") {
					t.Fatalf("multicast setup:\n%s", during)
				}
			case macmode.IGMP:
				if !strings.Contains(during, "inet  239.255.0.100") || !strings.Contains(during, "01:00:5e:7f:00:64") ||
					!strings.Contains(during, "inet6 ff05::bf:c612:64") || !strings.Contains(during, "33:33:c6:12:00:64") {
					t.Fatalf("igmp setup:\n%s", during)
				}
			}
			if err := in(func() error { return Setup(cfg) }); err == nil {
				t.Fatal("second setup over an existing state file succeeded")
			}
			var st State
			b, _ := os.ReadFile(cfg.StateFile)
			if err := json.Unmarshal(b, &st); err != nil || len(st.Changes) == 0 {
				t.Fatalf("state file: %v %s", err, b)
			}
			steps := len(st.Changes)
			if !st.Complete {
				t.Fatal("state file of a finished setup is not marked complete")
			}
			// A restarted agent adopts the same setup without a change...
			var adopted bool
			if err := in(func() (err error) { adopted, err = Adopt(cfg); return }); err != nil || !adopted {
				t.Fatalf("adopt the same setup: adopted=%v, %v", adopted, err)
			}
			if now := snapshot(t, ns, ifname); now != during {
				t.Fatalf("adopt changed the NIC:\n%s\nwas:\n%s", now, during)
			}
			// ...and redoes a setup for other VIPs.
			other := cfg
			other.VIPs = vips[:1]
			if err := in(func() (err error) { adopted, err = Adopt(other); return }); err != nil || adopted {
				t.Fatalf("adopt another setup: adopted=%v, %v", adopted, err)
			}
			if now := snapshot(t, ns, ifname); strings.Contains(now, "198.18.0.101") {
				t.Fatalf("the VIP no longer configured is still there:\n%s", now)
			}
			if err := in(func() error { return Restore(cfg.StateFile, cfg.Interface) }); err != nil {
				t.Fatal(err)
			}
			if after := snapshot(t, ns, ifname); after != before {
				t.Fatalf("after teardown:\n%s\nbefore:\n%s", after, before)
			}
			// Setup, then the agent dies: only the state file is left.
			if err := in(func() error { return Setup(cfg) }); err != nil {
				t.Fatal(err)
			}
			if err := in(func() error { return Restore(cfg.StateFile, cfg.Interface) }); err != nil {
				t.Fatal(err)
			}
			if after := snapshot(t, ns, ifname); after != before {
				t.Fatalf("after restore from the state file:\n%s\nbefore:\n%s", after, before)
			}
			if _, err := os.Stat(cfg.StateFile); !os.IsNotExist(err) {
				t.Fatalf("state file left after restore: %v", err)
			}
			// A failure at each step leaves everything as it was.
			for n := 1; n <= steps; n++ {
				fcfg := cfg
				fcfg.failAt = n
				err := in(func() error { return Setup(fcfg) })
				if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("step %d", n)) {
					t.Fatalf("failure at step %d: %v", n, err)
				}
				if after := snapshot(t, ns, ifname); after != before {
					t.Fatalf("after a failure at step %d:\n%s\nbefore:\n%s", n, after, before)
				}
				if _, err := os.Stat(cfg.StateFile); !os.IsNotExist(err) {
					t.Fatalf("state file left after a failure at step %d", n)
				}
			}
			t.Logf("%s: %d steps, each failure undone", mode, steps)
		})
	}
}

// TestHelperSetup is not a test: TestSetupSIGKILL runs the test binary
// with NLB_HELPER_NETNS set, and this function then does a setup in that
// namespace, says "ready", and waits to be killed.
func TestHelperSetup(t *testing.T) {
	path := os.Getenv("NLB_HELPER_NETNS")
	if path == "" {
		t.Skip("helper process for TestSetupSIGKILL only")
	}
	runtime.LockOSThread()
	h, err := netns.GetFromPath(path)
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	if err := netns.Set(h); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	cfg := Config{Mode: macmode.Mode(os.Getenv("NLB_HELPER_MODE")), Interface: os.Getenv("NLB_HELPER_IF"),
		VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.100")}, StateFile: os.Getenv("NLB_HELPER_STATE")}
	if err := Setup(cfg); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	time.Sleep(time.Minute)
	os.Exit(1)
}

// TestSetupSIGKILL: an agent process that set the NIC up is killed with
// SIGKILL; a restore from its state file leaves the namespace as before.
func TestSetupSIGKILL(t *testing.T) {
	inetns.RequireRoot(t)
	for _, mode := range []macmode.Mode{macmode.Unicast, macmode.Multicast, macmode.IGMP} {
		t.Run(string(mode), func(t *testing.T) {
			ns, ifname := hostNS(t, "k"+string(mode)[:2])
			before := snapshot(t, ns, ifname)
			state := filepath.Join(t.TempDir(), "nlb.state")
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperSetup$", "-test.v")
			cmd.Env = append(os.Environ(), "NLB_HELPER_NETNS="+ns.Path(), "NLB_HELPER_MODE="+string(mode),
				"NLB_HELPER_IF="+ifname, "NLB_HELPER_STATE="+state)
			out, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(out)
			ready := false
			for sc.Scan() {
				if sc.Text() == "ready" {
					ready = true
					break
				}
				if strings.HasPrefix(sc.Text(), "error:") {
					t.Fatal(sc.Text())
				}
			}
			if !ready {
				t.Fatal("helper did not get ready")
			}
			if snapshot(t, ns, ifname) == before {
				t.Fatal("helper's setup changed nothing")
			}
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			if err := ns.Do(func() error { return Restore(state, ifname) }); err != nil {
				t.Fatal(err)
			}
			if after := snapshot(t, ns, ifname); after != before {
				t.Fatalf("after SIGKILL and restore:\n%s\nbefore:\n%s", after, before)
			}
		})
	}
}

// TestCorruptStateFile: a state file that is corrupt, or names changes
// setup never makes (another link, an arbitrary path), is refused with a
// clear error by Restore and Adopt, never panics, and changes nothing:
// the NIC and the file stay as they are.
func TestCorruptStateFile(t *testing.T) {
	ns, ifname := hostNS(t, "cst")
	before := snapshot(t, ns, ifname)
	dir := t.TempDir()
	for _, body := range []string{
		`{"interface":"` + ifname + `","mode":"unicast","changes":[{"kind":"addr","link":"` + ifname + `","value":"198.18.0.100/99"}],"complete":true}`,
		`{"interface":"` + ifname + `","mode":"unicast","changes":[{"kind":"sysctl","link":"` + ifname + `","value":"` + filepath.Join(dir, "victim") + `=1","old":"0"}],"complete":true}`,
		`{"interface":"` + ifname + `","mode":"unicast","changes":[{"kind":"mac","link":"lo","value":"02:bf:00:00:00:01","old":"00:00:00:00:00:00"}],"complete":true}`,
		`{"interface":"other0","mode":"unicast","changes":[],"complete":true}`,
		`{"interface":`,
	} {
		state := filepath.Join(dir, "nlb.state")
		if err := os.WriteFile(state, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		err := ns.Do(func() error { return Restore(state, ifname) })
		if err == nil || !strings.Contains(err.Error(), "cannot be used, nothing was changed") {
			t.Errorf("restore of %s: %v", body, err)
		}
		cfg := Config{Mode: macmode.Unicast, Interface: ifname, VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.100")}, StateFile: state}
		if err := ns.Do(func() error { _, err := Adopt(cfg); return err }); err == nil {
			t.Errorf("adopt of %s: no error", body)
		}
		if _, err := os.Stat(state); err != nil {
			t.Errorf("the corrupt state file was removed: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "victim")); err == nil {
			t.Fatal("a sysctl entry wrote outside /proc/sys")
		}
		if after := snapshot(t, ns, ifname); after != before {
			t.Fatalf("a corrupt state file changed the namespace:\n%s\nbefore:\n%s", after, before)
		}
	}
}

// TestUnicastAnnouncesAddress: a neighbour that has the host's own
// address cached at the NIC's MAC learns the cluster MAC when unicast
// setup changes it, and the NIC's MAC again when teardown restores it,
// at once, not when its entry next goes stale (seconds during which the
// host's own address is unreachable: found by BenchmarkRequestCPU).
func TestUnicastAnnouncesAddress(t *testing.T) {
	inetns.RequireRoot(t)
	ns, ifname := hostNS(t, "ann")
	peer := &inetns.NS{Name: ns.Name + "p"}
	peerIf := ifname + "x"
	var orig string
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err == nil {
			orig = ifi.HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	lladdr := func() string {
		out, _ := exec.Command("ip", "-n", peer.Name, "neigh", "show", "198.18.0.1", "dev", peerIf).CombinedOutput()
		f := strings.Fields(string(out))
		for i := range f {
			if f[i] == "lladdr" && i+1 < len(f) {
				return f[i+1]
			}
		}
		return ""
	}
	// The peer resolves the host's address the usual way: a datagram to it.
	if out, err := exec.Command("ip", "netns", "exec", peer.Name, "bash", "-c", "echo x > /dev/udp/198.18.0.1/9").CombinedOutput(); err != nil {
		t.Fatalf("send to the host: %v: %s", err, out)
	}
	waitFor := func(want, when string) {
		t.Helper()
		deadline := time.Now().Add(time.Second)
		for lladdr() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the peer has 198.18.0.1 at %q, want %s", when, lladdr(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(orig, "before setup")
	cfg := Config{Mode: macmode.Unicast, Interface: ifname, VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.100")}, StateFile: filepath.Join(t.TempDir(), "nlb.state")}
	if err := ns.Do(func() error { return Setup(cfg) }); err != nil {
		t.Fatal(err)
	}
	waitFor("02:bf:c6:12:00:64", "after setup")
	if err := ns.Do(func() error { return Restore(cfg.StateFile, cfg.Interface) }); err != nil {
		t.Fatal(err)
	}
	waitFor(orig, "after teardown")
}
