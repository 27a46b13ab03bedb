//go:build linux

package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	inetns "github.com/nlbproject/nlb/internal/netns"
)

// bpffsDir mounts a private bpffs for the test's pins and unmounts it at the
// end.
func bpffsDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	mounted, err := EnsureBPFFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !mounted {
		t.Fatalf("expected a fresh bpffs mount at %s", dir)
	}
	t.Cleanup(func() { unix.Unmount(dir, 0) })
	return filepath.Join(dir, "nlb", "eth0")
}

// echoServer accepts on ln and echoes lines until the connection closes.
func echoServer(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() { defer c.Close(); io.Copy(c, c) }()
	}
}

// serverClient makes a server and a client namespace on a veth pair: the
// server has 198.18.0.2/24 and the VIP 198.18.0.10/32 and echoes TCP on
// VIP:80; the client has 198.18.0.3/24.
func serverClient(t *testing.T, tag string) (srv, cli *inetns.NS, sName, cName string) {
	srv, cli = inetns.New(t, tag+"srv"), inetns.New(t, tag+"cli")
	sName, cName = inetns.Prefix+tag+"s", inetns.Prefix+tag+"c"
	inetns.Veth(t, srv, sName, "198.18.0.2/24", cli, cName, "198.18.0.3/24")
	hs := srv.Netlink(t)
	sl, _ := hs.LinkByName(sName)
	inetns.Addr(t, hs, sl, "198.18.0.10/32")
	var ln net.Listener
	if err := srv.Do(func() (err error) { ln, err = net.Listen("tcp4", "198.18.0.10:80"); return }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go echoServer(ln)
	return srv, cli, sName, cName
}

// dialFrom connects from the client namespace with a fixed source port.
func dialFrom(ns *inetns.NS, src netip.Addr, port uint16, dst netip.AddrPort, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice(), Port: int(port)}}
		var err error
		c, err = d.Dial("tcp4", dst.String())
		return err
	})
	return c, err
}

func roundTrip(c net.Conn, msg string) error {
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

type tcState struct {
	qdiscs string
	links  int
}

func observeIface(t *testing.T, ns *inetns.NS, name string) (tcState, int) {
	t.Helper()
	h := ns.Netlink(t)
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := h.QdiscList(l)
	if err != nil {
		t.Fatal(err)
	}
	var st tcState
	for _, q := range qs {
		st.qdiscs += q.Type() + ";"
	}
	err = ns.Do(func() error {
		for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: at})
			if err != nil {
				return err
			}
			st.links += len(res.Programs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return st, l.Attrs().Index
}

// TestAttachNamespace: the program on a real veth decides real TCP
// connections as the table says; an established connection survives its
// bucket becoming retained while a new SYN there is refused; the pinned
// data plane keeps filtering with no agent and is re-adopted; egress masks
// the source MAC; detach leaves the interface as it was.
func TestAttachNamespace(t *testing.T) {
	inetns.RequireRoot(t)
	srv, cli, sName, cName := serverClient(t, "")
	vip := netip.MustParseAddr("198.18.0.10")
	client := netip.MustParseAddr("198.18.0.3")
	sl, _ := srv.Netlink(t).LinkByName(sName)

	before, ifindex := observeIface(t, srv, sName)
	pin := bpffsDir(t)
	d, err := Load(DatapathOptions{PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Do(func() error { return d.Attach(ifindex) }); err != nil {
		t.Fatal(err)
	}

	// Host 1 of {1, 2}: it owns half of the buckets of all:80/tcp.
	var table filter.Table
	for b := range table {
		table[b] = uint8(1 + b%2)
	}
	s := &filter.State{
		VIPs:  []netip.Addr{vip},
		Rules: []filter.PortRule{{StartPort: 80, EndPort: 80, Protocol: filter.ProtoTCP, Mode: filter.ModeMultiple, Affinity: filter.AffinityNone}},
		Seed:  filter.Seed{1, 2, 3, 4},
		// The lease is renewed below.
		LeaseValid: true,
	}
	s.Marks[0] = table.MarksFor(1)
	s.Marks[filter.DefaultRule] = filter.Uniform(1).MarksFor(1)
	if err := d.Update(s, Egress{}); err != nil {
		t.Fatal(err)
	}
	if err := d.RenewLease(time.Hour); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(vip, 80)
	synOf := func(port uint16) *filter.Packet {
		return &filter.Packet{Src: client, Dst: vip, Proto: 6, SPort: port, DPort: 80, TCPFlags: 0x02}
	}

	// 1. 40 connections from distinct ports: each succeeds exactly when the
	// model accepts its SYN. An accepted SYN is answered at once, but a
	// slow machine may take its time: a dial the model accepts gets 5 s.
	// A dropped SYN is never answered: 1.5 s covers the first retransmit.
	const acceptTimeout, dropTimeout = 5 * time.Second, 1500 * time.Millisecond
	var (
		mu       sync.Mutex
		accepted = map[uint16]net.Conn{}
		wg       sync.WaitGroup
	)
	for p := uint16(30000); p < 30040; p++ {
		wg.Add(1)
		go func(p uint16) {
			defer wg.Done()
			want := filter.Decide(synOf(p).Frame(), s, nil).Verdict == filter.Accept
			timeout := dropTimeout
			if want {
				timeout = acceptTimeout
			}
			c, err := dialFrom(cli, client, p, dst, timeout)
			if (err == nil) != want {
				t.Errorf("port %d: dial err %v, model accepts %v", p, err, want)
			}
			if err == nil {
				mu.Lock()
				accepted[p] = c
				mu.Unlock()
			}
		}(p)
	}
	wg.Wait()
	if len(accepted) < 10 || len(accepted) > 30 {
		t.Fatalf("%d of 40 connections accepted, expected about half", len(accepted))
	}
	var heldPort uint16
	for p, c := range accepted {
		if err := roundTrip(c, "hello"); err != nil {
			t.Fatalf("port %d: %v", p, err)
		}
		heldPort = p
	}
	defer func() {
		for _, c := range accepted {
			c.Close()
		}
	}()

	// 2. Its bucket becomes retained (another host owns it now): the
	// established connection keeps working, a new SYN in it is refused.
	b := filter.Bucket(s.Seed, client, heldPort, filter.AffinityNone)
	s.Marks[0][b] = filter.MarkRetained
	if err := d.Update(s, Egress{}); err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(accepted[heldPort], "still here"); err != nil {
		t.Fatalf("established connection in a retained bucket: %v", err)
	}
	newPort := uint16(0)
	for p := uint16(40000); p < 60000; p++ {
		if filter.Bucket(s.Seed, client, p, filter.AffinityNone) == b {
			newPort = p
			break
		}
	}
	if c, err := dialFrom(cli, client, newPort, dst, dropTimeout); err == nil {
		c.Close()
		t.Fatalf("new connection from port %d in a retained bucket was accepted", newPort)
	}
	c, err := d.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if c.Packets[0][filter.ReasonAcceptHeldFlow] == 0 || c.Packets[0][filter.ReasonDropNotOwner] == 0 || c.Packets[0][filter.ReasonAcceptOwner] == 0 {
		t.Fatalf("counters for rule 0: %v", c.Packets[0])
	}
	if c.Bytes[0][filter.ReasonAcceptOwner] < 54*c.Packets[0][filter.ReasonAcceptOwner] {
		t.Fatalf("bytes for rule 0: %v, packets %v: want at least an Ethernet+IPv4+TCP header each", c.Bytes[0], c.Packets[0])
	}

	// 3. The agent goes away: pinned links and maps keep filtering.
	d.Close()
	if err := roundTrip(accepted[heldPort], "no agent"); err != nil {
		t.Fatalf("held connection with no agent: %v", err)
	}
	if c, err := dialFrom(cli, client, newPort, dst, dropTimeout); err == nil {
		c.Close()
		t.Fatal("with no agent, a SYN in a retained bucket was accepted")
	}
	// ...and a restarted agent re-adopts them, tables intact, without
	// writing any state.
	d, err = Load(DatapathOptions{PinDir: pin})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Do(func() error { return d.Attach(ifindex) }); err != nil {
		t.Fatal(err)
	}
	mid, _ := observeIface(t, srv, sName)
	if mid.links != 2 {
		t.Fatalf("after re-adoption %d TCX programs attached, want 2", mid.links)
	}
	for p, c := range accepted {
		if err := roundTrip(c, "after restart"); err != nil {
			t.Fatalf("port %d after restart: %v", p, err)
		}
	}
	if c, err := d.Counters(); err != nil || c.Packets[0][filter.ReasonAcceptHeldFlow] == 0 {
		t.Fatalf("counters were not carried over: %v %v", err, c)
	}

	// 4. Egress masking: frames leaving with the cluster MAC as source get
	// the masked MAC instead.
	sMAC := [6]byte(sl.Attrs().HardwareAddr)
	masked := [6]byte{0x02, 0x01, 198, 18, 0, 10}
	if err := d.Update(s, Egress{Mask: true, ClusterMAC: sMAC, MaskedMAC: masked}); err != nil {
		t.Fatal(err)
	}
	src, err := captureSource(t, cli, cName, func() { roundTrip(accepted[heldPort], "mask") })
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(src, masked[:]) {
		t.Fatalf("source MAC %x, want masked %x", src, masked)
	}

	// 5. Detach: no programs, no qdisc change, no pins.
	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	after, _ := observeIface(t, srv, sName)
	if after != before {
		t.Fatalf("interface after detach %+v, before %+v", after, before)
	}
	if _, err := os.Stat(pin); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin directory left behind: %v", err)
	}
}

// captureSource returns the Ethernet source of the first IPv4 frame seen
// on ifname in ns while action runs.
func captureSource(t *testing.T, ns *inetns.NS, ifname string, action func()) ([]byte, error) {
	var fd int
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_IP))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, proto)
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifi.Index})
	})
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			action()
			time.Sleep(20 * time.Millisecond)
		}
	}()
	buf := make([]byte, 2048)
	for i := 0; i < 50; {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue // a signal (the Go runtime's preemption among them)
		}
		i++
		if err != nil {
			return nil, fmt.Errorf("capture: %w", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if n >= 14 {
			return append([]byte(nil), buf[6:12]...), nil
		}
	}
	return nil, errors.New("capture: no incoming frame")
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestMulticastRemark: frames to a multicast cluster MAC reach the stack
// as PACKET_MULTICAST, which TCP discards; the program re-marks the frames
// it accepts as PACKET_HOST. A real TCP connection to the VIP through a
// multicast MAC fails without the program and succeeds with it.
func TestMulticastRemark(t *testing.T) {
	inetns.RequireRoot(t)
	srv, cli, sName, cName := serverClient(t, "m")
	vip := netip.MustParseAddr("198.18.0.10")
	hs, hc := srv.Netlink(t), cli.Netlink(t)
	sl, _ := hs.LinkByName(sName)
	// The server NIC receives the cluster multicast MAC (promiscuous is
	// enough for the test); the client resolves the VIP to it.
	if err := hs.SetPromiscOn(sl); err != nil {
		t.Fatal(err)
	}
	cl, _ := hc.LinkByName(cName)
	mcast := net.HardwareAddr{0x03, 0xbf, 198, 18, 0, 10}
	if err := hc.NeighSet(&netlink.Neigh{LinkIndex: cl.Attrs().Index, State: netlink.NUD_PERMANENT,
		IP: net.IP(vip.AsSlice()), HardwareAddr: mcast}); err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(vip, 80)
	client := netip.MustParseAddr("198.18.0.3")

	if c, err := dialFrom(cli, client, 31000, dst, 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("TCP through a multicast MAC worked without the program: the test proves nothing")
	}
	d, err := Load(DatapathOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := srv.Do(func() error { return d.Attach(sl.Attrs().Index) }); err != nil {
		t.Fatal(err)
	}
	s := &filter.State{VIPs: []netip.Addr{vip}, Seed: filter.Seed{1}, LeaseValid: true}
	s.Marks[filter.DefaultRule] = filter.Uniform(1).MarksFor(1) // this host takes everything
	if err := d.Update(s, Egress{}); err != nil {
		t.Fatal(err)
	}
	if err := d.RenewLease(time.Hour); err != nil {
		t.Fatal(err)
	}
	c, err := dialFrom(cli, client, 31001, dst, 2*time.Second)
	if err != nil {
		t.Fatalf("TCP through a multicast MAC with the program: %v", err)
	}
	defer c.Close()
	if err := roundTrip(c, "multicast"); err != nil {
		t.Fatal(err)
	}
}
