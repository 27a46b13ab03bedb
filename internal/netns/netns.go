// Package netns creates network namespaces, veths and bridges for tests.
// Every name carries a per-run prefix and everything is removed when the
// test ends, also on failure. It is test support, never product code.
package netns

import (
	"fmt"
	"golang.org/x/sys/unix"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// T is what these helpers need of a test: testing.TB has it, and so does
// the demo's runner, which is not a test.
type T interface {
	Helper()
	Fatalf(format string, args ...any)
	Errorf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
}

// RequireRoot skips a test that needs root when not root, saying why. In
// CI (CI=true), which runs as root, not being root is a failure, so that
// kernel tests never silently skip there.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatal("CI runs as root, but this test is not running as root: kernel tests would not run")
	}
	tb.Skip("needs root (eBPF, network namespaces): run `sudo make test`")
}

// Prefix is this run's name prefix: "nlbt" + 4 random hex digits.
var Prefix = fmt.Sprintf("nlbt%04x", rand.IntN(0x10000))

// NS is a named network namespace (/run/netns/NAME).
type NS struct {
	Name   string
	handle netns.NsHandle
}

// New creates namespace Prefix+suffix, removed when the test ends.
func New(tb T, suffix string) *NS {
	tb.Helper()
	name := Prefix + suffix
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		tb.Fatalf("get current netns: %v", err)
	}
	defer orig.Close()
	h, err := netns.NewNamed(name) // also moves this thread into it
	if serr := netns.Set(orig); serr != nil {
		panic(fmt.Sprintf("cannot return to the original netns: %v", serr))
	}
	if err != nil {
		tb.Fatalf("create netns %s: %v", name, err)
	}
	n := &NS{Name: name, handle: h}
	tb.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			tb.Errorf("delete netns %s: %v", name, err)
		}
	})
	if err := n.Do(func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	}); err != nil {
		tb.Fatalf("netns %s: lo up: %v", name, err)
	}
	return n
}

// Path is the namespace's bind-mount path, for nsenter --net=PATH.
func (n *NS) Path() string { return "/run/netns/" + n.Name }

// Handle is the namespace's file handle.
func (n *NS) Handle() netns.NsHandle { return n.handle }

// Do runs fn on a thread inside the namespace. Sockets fn creates belong to
// the namespace and can be used from anywhere afterwards.
func (n *NS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: if restoring the namespace
		// failed, the runtime discards it when this goroutine exits.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			errc <- err
			return
		}
		err = fn()
		if serr := netns.Set(orig); serr == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// Netlink returns a netlink handle operating inside the namespace.
func (n *NS) Netlink(tb T) *netlink.Handle {
	tb.Helper()
	h, err := netlink.NewHandleAt(n.handle)
	if err != nil {
		tb.Fatalf("netlink handle in %s: %v", n.Name, err)
	}
	tb.Cleanup(h.Close)
	return h
}

// Veth creates a veth pair: aName in a, bName in b, both up, with the given
// addresses (CIDR strings, may be empty).
func Veth(tb T, a *NS, aName, aAddr string, b *NS, bName, bAddr string) {
	tb.Helper()
	ha, hb := a.Netlink(tb), b.Netlink(tb)
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: aName},
		PeerName:      bName,
		PeerNamespace: netlink.NsFd(int(b.handle)),
	}
	if err := ha.LinkAdd(v); err != nil {
		tb.Fatalf("add veth %s/%s: %v", aName, bName, err)
	}
	for _, side := range []struct {
		h          *netlink.Handle
		name, addr string
	}{{ha, aName, aAddr}, {hb, bName, bAddr}} {
		l, err := side.h.LinkByName(side.name)
		if err != nil {
			tb.Fatalf("veth %s: %v", side.name, err)
		}
		if side.addr != "" {
			Addr(tb, side.h, l, side.addr)
		}
		if err := side.h.LinkSetUp(l); err != nil {
			tb.Fatalf("veth %s up: %v", side.name, err)
		}
	}
}

// Addr adds an address (CIDR) to a link.
func Addr(tb T, h *netlink.Handle, l netlink.Link, cidr string) {
	tb.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		tb.Fatalf("parse %s: %v", cidr, err)
	}
	a.Flags |= unix.IFA_F_NODAD // usable at once (IPv6: no duplicate address detection)
	if err := h.AddrAdd(l, a); err != nil && !strings.Contains(err.Error(), "exists") {
		tb.Fatalf("add %s to %s: %v", cidr, l.Attrs().Name, err)
	}
}

// WaitGone waits until no link with the prefix is left in the root
// namespace (`ip netns del` returns before veth peers disappear).
func WaitGone(tb T) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		links, _ := netlink.LinkList()
		left := 0
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, Prefix) {
				left++
			}
		}
		if left == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Errorf("links with prefix %s still present after cleanup", Prefix)
}

// Switch creates a namespace holding a Linux bridge "br0" (up), the
// segment's switch, named "sw" and tag (a second segment needs its own).
// Hosts are plugged into it with Plug.
func Switch(tb T, tag string) *NS {
	tb.Helper()
	sw := New(tb, "sw"+tag)
	h := sw.Netlink(tb)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := h.LinkAdd(br); err != nil {
		tb.Fatalf("add bridge: %v", err)
	}
	if err := h.LinkSetUp(br); err != nil {
		tb.Fatalf("bridge up: %v", err)
	}
	// A switch forwards frames as they are: with br_netfilter loaded the
	// bridge would run bridged IPv4 through netfilter and drop malformed
	// headers before any host sees them.
	sw.Do(func() error {
		for _, k := range []string{"iptables", "ip6tables", "arptables"} {
			os.WriteFile("/proc/sys/net/bridge/bridge-nf-call-"+k, []byte("0"), 0o644) // absent without br_netfilter
		}
		return nil
	})
	return sw
}

// Plug connects host to the switch with a veth: ifname (with addr, may be
// empty) in the host, "p"+ifname enslaved to br0 in the switch.
func Plug(tb T, sw, host *NS, ifname, addr string) {
	tb.Helper()
	port := "p" + ifname
	Veth(tb, host, ifname, addr, sw, port, "")
	h := sw.Netlink(tb)
	br, err := h.LinkByName("br0")
	if err != nil {
		tb.Fatalf("%v", err)
	}
	p, err := h.LinkByName(port)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	if err := h.LinkSetMaster(p, br); err != nil {
		tb.Fatalf("enslave %s: %v", port, err)
	}
	// A frame sent before both ends report carrier is lost; tests that
	// send once right after plugging must not depend on that race.
	WaitOperUp(tb, host.Netlink(tb), ifname)
	WaitOperUp(tb, h, port)
}

// WaitOperUp waits (up to 5 s) until the link reports operational state up.
func WaitOperUp(tb T, h *netlink.Handle, name string) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := h.LinkByName(name)
		if err != nil {
			tb.Fatalf("link %s: %v", name, err)
		}
		if l.Attrs().OperState == netlink.OperUp {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("link %s: operational state %v after 5 s", name, l.Attrs().OperState)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
