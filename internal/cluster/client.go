//go:build linux

package cluster

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nlbproject/nlb/internal/netns"
)

// Client is one client namespace with its addresses.
type Client struct {
	NS     *netns.NS
	Ifname string
	IPs    []netip.Addr
	IPs6   []netip.Addr // a dual-stack cluster's (Options.IPv6)
}

// Dial opens a TCP connection from client address src (a fixed source
// port if sport != 0) to VIP:port, from inside the client's namespace.
func (cl *Client) Dial(src netip.Addr, sport uint16, port uint16, timeout time.Duration) (*net.TCPConn, error) {
	var conn net.Conn
	err := cl.NS.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice(), Port: int(sport)}}
		var err error
		conn, err = d.Dial("tcp4", netip.AddrPortFrom(VIP, port).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// DialTo opens a TCP connection from client address src to dst, from
// inside the client's namespace.
func (cl *Client) DialTo(src netip.Addr, dst netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	var conn net.Conn
	err := cl.NS.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		conn, err = d.Dial("tcp", dst.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// Get makes one HTTP/1.0 request on a new connection and returns the ID of
// the host that answered and the client address:port used.
func (cl *Client) Get(src netip.Addr, port uint16, timeout time.Duration) (uint8, netip.AddrPort, error) {
	return cl.GetTo(src, netip.AddrPortFrom(VIP, port), timeout)
}

// GetTo makes one HTTP/1.0 request from src to dst (IPv4 or IPv6) on a
// new connection and returns the answering host and the client
// address:port used.
func (cl *Client) GetTo(src netip.Addr, dst netip.AddrPort, timeout time.Duration) (uint8, netip.AddrPort, error) {
	conn, err := cl.DialTo(src, dst, timeout)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	id, err := HTTPHost(conn, timeout)
	return id, local, err
}

// HTTPHost makes one HTTP/1.0 request on conn and returns the ID of the
// host that answered.
func HTTPHost(conn net.Conn, timeout time.Duration) (uint8, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: vip\r\n\r\n"); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return 0, err
	}
	i := strings.LastIndex(string(b), "host ")
	if i < 0 {
		return 0, fmt.Errorf("unexpected answer %q", b)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b[i+5:])))
	if err != nil {
		return 0, fmt.Errorf("unexpected answer %q", b)
	}
	return uint8(n), nil
}

// UDPEcho sends one datagram from src to VIP:7 and returns the answering
// host.
func (cl *Client) UDPEcho(src netip.Addr, timeout time.Duration) (uint8, netip.AddrPort, error) {
	var conn *net.UDPConn
	err := cl.NS.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(VIP, PortEcho)))
		return err
	})
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return 0, local, err
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return 0, local, err
	}
	id, _, _ := strings.Cut(string(buf[:n]), " ")
	v, err := strconv.Atoi(id)
	if err != nil {
		return 0, local, fmt.Errorf("unexpected echo %q", buf[:n])
	}
	return uint8(v), local, nil
}

// FlowsOwnedBy returns n distinct client flows (address, port) of cl that
// the live tables (asked of host 1) give to one of owners for port/tcp.
// The same seed gives the same candidates.
func (c *Cluster) FlowsOwnedBy(cl *Client, port uint16, n int, seed uint64, owners ...uint8) []netip.AddrPort {
	c.T.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	var out []netip.AddrPort
	for tries := 0; len(out) < n; tries++ {
		if tries > 50*n {
			c.T.Fatalf("found only %d flows owned by %v", len(out), owners)
		}
		f := netip.AddrPortFrom(cl.IPs[r.IntN(len(cl.IPs))], uint16(20000+r.IntN(40000)))
		own, err := c.Owner(1, f, port, "tcp")
		if err != nil {
			c.T.Fatalf("%v", err)
		}
		if slices.Contains(owners, own) && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}
