package agent

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// TestDumpTCP: the kernel filters the dump by state: an established
// connection is listed in heldStates, its listener is not (and is with a
// LISTEN mask), and a connection the server closed first (TIME_WAIT on
// its side) is not held — over IPv4, over IPv6, and over IPv4 to a
// dual-stack listener (whose connections sit in the IPv6 table with
// mapped addresses, and are listed as IPv4 flows).
func TestDumpTCP(t *testing.T) {
	for _, tc := range []struct{ name, listen, dial, host string }{
		{"ipv4", "tcp4", "tcp4", "127.0.0.1"},
		{"ipv6", "tcp6", "tcp6", "::1"},
		{"ipv4 to a dual-stack listener", "tcp", "tcp4", "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) { testDumpTCP(t, tc.listen, tc.dial, tc.host) })
	}
}

func testDumpTCP(t *testing.T, network, dial, host string) {
	lnAddr := net.JoinHostPort(host, "0")
	if network == "tcp" {
		lnAddr = "[::]:0" // dual-stack
	}
	ln, err := net.Listen(network, lnAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := netip.AddrPortFrom(netip.MustParseAddr(host), ln.Addr().(*net.TCPAddr).AddrPort().Port())
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	open, err := net.Dial(dial, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	srvOpen := <-accepted
	defer srvOpen.Close()
	closing, err := net.Dial(dial, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	srvClosed := <-accepted
	srvClosed.Close() // the server closes first...
	buf := make([]byte, 1)
	closing.SetReadDeadline(time.Now().Add(time.Second))
	closing.Read(buf) // ...the client sees EOF
	closing.Close()   // and closes: the server side ends in TIME_WAIT

	find := func(states uint32) map[netip.AddrPort]uint8 {
		t.Helper()
		conns, err := dumpTCP(states)
		if err != nil {
			t.Fatal(err)
		}
		out := map[netip.AddrPort]uint8{}
		for _, c := range conns {
			if c.local.Port() == addr.Port() {
				out[c.remote] = c.state
			}
		}
		return out
	}
	openPeer := open.LocalAddr().(*net.TCPAddr).AddrPort()
	closedPeer := closing.LocalAddr().(*net.TCPAddr).AddrPort()
	// Wait for the closing handshake to end: the client side reaches
	// TIME_WAIT (event, not a fixed sleep).
	for deadline := time.Now().Add(5 * time.Second); find(1 << tcpTimeWait)[closedPeer] != tcpTimeWait; {
		if time.Now().After(deadline) {
			t.Fatal("the closed connection never reached TIME_WAIT")
		}
		time.Sleep(5 * time.Millisecond)
	}
	held := find(heldStates)
	if held[openPeer] != 1 {
		t.Errorf("established connection not listed as held: %v", held)
	}
	if _, ok := held[closedPeer]; ok {
		t.Errorf("TIME_WAIT connection listed as held: %v", held)
	}
	if _, ok := held[netip.AddrPortFrom(netip.IPv4Unspecified(), 0)]; ok {
		t.Errorf("listener listed as held: %v", held)
	}
	if tw := find(1 << tcpTimeWait); tw[closedPeer] != tcpTimeWait {
		t.Errorf("TIME_WAIT mask: %v, want the closed connection", tw)
	}
	if l := find(1 << tcpListen); len(l) != 1 {
		t.Errorf("LISTEN mask: %v, want the listener", l)
	}
}
