package agent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// tcpConn is one TCP socket from the kernel's socket table.
type tcpConn struct {
	local, remote netip.AddrPort
	state         uint8
}

// errDumpInterrupted: the socket table changed during the dump, which may
// then miss sockets; the caller retries later rather than act on it.
var errDumpInterrupted = errors.New("sock_diag: dump interrupted")

// Kernel TCP states (include/net/tcp_states.h).
const (
	tcpTimeWait  = 6
	tcpListen    = 10
	tcpMaxStates = 13
)

// dumpTCP lists the TCP sockets of both families whose state is in
// states (a bitmask of 1<<state). The IPv6 table holds the IPv6
// connections and also the IPv4 ones accepted by dual-stack listeners
// (a service listening on [::] — Go's and many servers' default), with
// IPv4-mapped addresses: they are unmapped, so each connection is listed
// as the flow the data plane sees.
func dumpTCP(states uint32) ([]tcpConn, error) {
	v4, err := dumpTCPFamily(unix.AF_INET, states)
	if err != nil {
		return nil, err
	}
	v6, err := dumpTCPFamily(unix.AF_INET6, states)
	if err != nil {
		return nil, err
	}
	return append(v4, v6...), nil
}

// dumpTCPFamily lists the TCP sockets of one family whose state is in
// states, with a sock_diag request of its own: the kernel filters by
// state, so a host with hundreds of thousands of TIME_WAIT sockets (an
// HTTP/1.0 server closes first) does not copy them out 10 times a second,
// and no TCP_INFO extension is asked for.
func dumpTCPFamily(family uint8, states uint32) ([]tcpConn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag bind: %w", err)
	}
	// nlmsghdr (16) + inet_diag_req_v2 (56): family, protocol, ext, pad,
	// states, then an all-zero inet_diag_sockid (48).
	const reqLen = unix.SizeofNlMsghdr + 56
	req := make([]byte, reqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], reqLen)
	ne.PutUint16(req[4:], 20) // SOCK_DIAG_BY_FAMILY
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	ne.PutUint32(req[8:], 1)
	req[16], req[17] = family, unix.IPPROTO_TCP
	ne.PutUint32(req[20:], states)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("sock_diag send: %w", err)
	}
	var out []tcpConn
	buf := make([]byte, 1<<16)
	interrupted := false
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err == unix.EINTR {
			continue // a signal (the Go runtime's preemption among them)
		}
		if err != nil {
			return nil, fmt.Errorf("sock_diag receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("sock_diag parse: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
				interrupted = true
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				if interrupted {
					return nil, errDumpInterrupted
				}
				return out, nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if e := int32(ne.Uint32(m.Data)); e != 0 {
						return nil, fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return nil, errors.New("sock_diag: error reply")
			}
			// inet_diag_msg: family, state, timer, retrans, then the
			// sockid: sport, dport (big endian), src[16], dst[16], ...
			d := m.Data
			if len(d) < 4+4+32 || d[0] != family {
				continue
			}
			sport, dport := binary.BigEndian.Uint16(d[4:]), binary.BigEndian.Uint16(d[6:])
			src := netip.AddrFrom4([4]byte(d[8:12]))
			dst := netip.AddrFrom4([4]byte(d[24:28]))
			if family == unix.AF_INET6 {
				src = netip.AddrFrom16([16]byte(d[8:24])).Unmap()
				dst = netip.AddrFrom16([16]byte(d[24:40])).Unmap()
			}
			out = append(out, tcpConn{netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport), d[1]})
		}
	}
}

// heldStates are the TCP states that count as a held flow: all but
// LISTEN and TIME_WAIT (see scan).
const heldStates = (1<<tcpMaxStates - 1) &^ (1<<tcpListen | 1<<tcpTimeWait | 1)
