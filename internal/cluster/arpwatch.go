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
)

// Announcement is one gratuitous ARP frame seen on a host's switch port.
type Announcement struct {
	At  time.Time
	MAC net.HardwareAddr // the ARP sender hardware address (what clients learn)
}

// ARPWatch records the gratuitous ARP frames (sender IP = target IP = the
// VIP) one host sends into the switch: a raw socket on the host's bridge
// port, keeping only frames that arrive from the host.
type ARPWatch struct {
	mu      sync.Mutex
	seen    []Announcement
	fd      int
	done    chan struct{} // closed to stop run
	stopped chan struct{} // closed by run once the socket is closed
}

// WatchARP starts recording host id's announcements of the VIP until the
// test ends.
func (c *Cluster) WatchARP(id uint8) *ARPWatch {
	c.T.Helper()
	h := c.Hosts[id]
	w := &ARPWatch{fd: -1, done: make(chan struct{}), stopped: make(chan struct{})}
	err := c.Switch.Do(func() error {
		ifi, err := net.InterfaceByName("p" + h.Ifname)
		if err != nil {
			return err
		}
		// ETH_P_ALL: a bridge port's rx handler consumes frames before
		// protocol-specific packet sockets would see them.
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
		w.fd = fd
		return nil
	})
	if err != nil {
		c.T.Fatalf("watch ARP of host %d: %v", id, err)
	}
	go w.run()
	c.T.Cleanup(w.close)
	return w
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (w *ARPWatch) run() {
	defer close(w.stopped)
	defer unix.Close(w.fd)
	buf := make([]byte, 1514)
	for {
		select {
		case <-w.done:
			return
		default:
		}
		n, from, err := unix.Recvfrom(w.fd, buf, 0)
		if err != nil {
			continue // timeout: look at done again
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); !ok || ll.Pkttype == unix.PACKET_OUTGOING {
			continue // towards the host, not from it
		}
		if mac, ok := gratuitous(buf[:n]); ok {
			w.mu.Lock()
			w.seen = append(w.seen, Announcement{At: time.Now(), MAC: mac})
			w.mu.Unlock()
		}
	}
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

func (w *ARPWatch) close() {
	close(w.done)
	<-w.stopped // within one receive timeout
}
