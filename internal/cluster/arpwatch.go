//go:build linux

package cluster

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/internal/netns"
)

// tap reads every frame on one interface of a namespace (ETH_P_ALL: a
// bridge port's rx handler consumes frames before protocol-specific
// packet sockets would see them) and hands those not sent by this side
// (PACKET_OUTGOING) to fn, until the test ends.
type tap struct {
	fd      int
	done    chan struct{}
	stopped chan struct{}
}

func startTap(t netns.T, ns *netns.NS, ifname string, fn func(frame []byte)) {
	t.Helper()
	tp := &tap{fd: -1, done: make(chan struct{}), stopped: make(chan struct{})}
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		proto := htons(unix.ETH_P_ALL)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(proto))
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		tp.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture on %s: %v", ifname, err)
	}
	go func() {
		defer close(tp.stopped)
		defer unix.Close(tp.fd)
		buf := make([]byte, 65536)
		for {
			select {
			case <-tp.done:
				return
			default:
			}
			n, from, err := unix.Recvfrom(tp.fd, buf, 0)
			if err != nil {
				continue // timeout: look at done again
			}
			if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype != unix.PACKET_OUTGOING {
				fn(buf[:n])
			}
		}
	}()
	t.Cleanup(func() {
		close(tp.done)
		<-tp.stopped // within one receive timeout
	})
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Announcement is one gratuitous ARP frame seen on a host's switch port.
type Announcement struct {
	At  time.Time
	MAC net.HardwareAddr // the ARP sender hardware address (what clients learn)
}

// ARPWatch records the gratuitous ARP frames (sender IP = target IP = the
// VIP) one host sends into the switch, seen at its bridge port.
type ARPWatch struct {
	mu   sync.Mutex
	seen []Announcement
}

// WatchARP starts recording host id's announcements of the VIP until the
// test ends.
func (c *Cluster) WatchARP(id uint8) *ARPWatch {
	c.T.Helper()
	w := &ARPWatch{}
	startTap(c.T, c.Switch, "p"+c.Hosts[id].Ifname, func(f []byte) {
		if mac, ok := gratuitous(f); ok {
			w.mu.Lock()
			w.seen = append(w.seen, Announcement{At: time.Now(), MAC: mac})
			w.mu.Unlock()
		}
	})
	return w
}

// gratuitous parses an Ethernet/ARP frame and reports the sender hardware
// address of an announcement of VIP.
func gratuitous(f []byte) (net.HardwareAddr, bool) {
	const eth, arpLen = 14, 28
	if len(f) < eth+arpLen || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_ARP {
		return nil, false
	}
	a := f[eth:]
	if binary.BigEndian.Uint16(a[0:]) != 1 || binary.BigEndian.Uint16(a[2:]) != unix.ETH_P_IP || a[4] != 6 || a[5] != 4 {
		return nil, false
	}
	spa := netip.AddrFrom4([4]byte(a[14:18]))
	tpa := netip.AddrFrom4([4]byte(a[24:28]))
	if spa != VIP || tpa != VIP {
		return nil, false
	}
	return net.HardwareAddr(append([]byte(nil), a[8:14]...)), true
}

// Seen returns the announcements so far.
func (w *ARPWatch) Seen() []Announcement {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Announcement(nil), w.seen...)
}

// WaitMore waits until more than n announcements were seen and returns
// them all.
func (w *ARPWatch) WaitMore(n int, timeout time.Duration) ([]Announcement, error) {
	deadline := time.Now().Add(timeout)
	for {
		s := w.Seen()
		if len(s) > n {
			return s, nil
		}
		if time.Now().After(deadline) {
			return s, fmt.Errorf("no gratuitous ARP within %v (seen %d)", timeout, len(s))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// SYNACKWatch records, at a client, which hosts answered each SYN: a
// SYN-ACK from the VIP is keyed by the client's address, port and
// acknowledged sequence number (the SYN's), and attributed to the host
// whose masked source MAC (unicast mode: 02:ID:...) it carries.
type SYNACKWatch struct {
	mu      sync.Mutex
	answers map[synKey]map[string]bool
	total   int
}

type synKey struct {
	client netip.AddrPort
	ack    uint32
}

// WatchSYNACK starts recording SYN-ACKs arriving at client ci.
func (c *Cluster) WatchSYNACK(ci int) *SYNACKWatch {
	c.T.Helper()
	w := &SYNACKWatch{answers: map[synKey]map[string]bool{}}
	cl := c.Clients[ci]
	startTap(c.T, cl.NS, cl.Ifname, func(f []byte) {
		const eth = 14
		if len(f) < eth+20 || binary.BigEndian.Uint16(f[12:]) != unix.ETH_P_IP {
			return
		}
		ip := f[eth:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != unix.IPPROTO_TCP || len(ip) < ihl+20 || netip.AddrFrom4([4]byte(ip[12:16])) != VIP {
			return
		}
		tcp := ip[ihl:]
		const syn, ack = 0x02, 0x10
		if tcp[13]&(syn|ack) != syn|ack {
			return
		}
		k := synKey{netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip[16:20])), binary.BigEndian.Uint16(tcp[2:4])),
			binary.BigEndian.Uint32(tcp[8:12])}
		from := net.HardwareAddr(f[6:12]).String()
		if f[6] == 0x02 {
			from = fmt.Sprintf("host %d", f[7])
		}
		w.mu.Lock()
		if w.answers[k] == nil {
			w.answers[k] = map[string]bool{}
		}
		w.answers[k][from] = true
		w.total++
		w.mu.Unlock()
	})
	return w
}

// Result returns the SYN-ACKs seen, the SYNs answered, and a description
// of each SYN answered by more than one host.
func (w *SYNACKWatch) Result() (synacks, syns int, doubles []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, hosts := range w.answers {
		if len(hosts) > 1 {
			doubles = append(doubles, fmt.Sprintf("%v seq %d answered by %v", k.client, k.ack-1, hosts))
		}
	}
	return w.total, len(w.answers), doubles
}

// SendRaw sends Ethernet frames as they are out of client cl's interface,
// at most for d, and returns how many were sent.
func (cl *Client) SendRaw(frames [][]byte, d time.Duration) (int, error) {
	sent := 0
	err := cl.NS.Do(func() error {
		ifi, err := net.InterfaceByName(cl.Ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		end := time.Now().Add(d)
		for _, f := range frames {
			if time.Now().After(end) {
				break
			}
			if err := unix.Sendto(fd, f, 0, to); err != nil {
				if err == unix.ENOBUFS {
					continue
				}
				return err
			}
			sent++
		}
		return nil
	})
	return sent, err
}
