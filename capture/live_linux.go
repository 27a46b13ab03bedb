package capture

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/internal/rawsock"
)

// Live captures every frame on an interface (AF_PACKET, all ethertypes),
// promiscuously so that a machine that is not a cluster host sees the
// frames flooded to the cluster MAC. Close restores the interface.
type Live struct {
	c   *packet.Conn
	ifi *net.Interface
	buf []byte
}

// Open starts a live capture on ifname.
func Open(ifname string) (*Live, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	c, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, nil)
	if err != nil {
		return nil, fmt.Errorf("capture on %s: %w", ifname, err)
	}
	if err := c.SetPromiscuous(true); err != nil {
		c.Close()
		return nil, fmt.Errorf("capture on %s: promiscuous mode: %w", ifname, err)
	}
	return &Live{c: c, ifi: ifi, buf: make([]byte, 65536)}, nil
}

// Next returns the next frame as a decoded packet, stamped with its
// arrival time, or ctx's error when it ends.
func (l *Live) Next(ctx context.Context) (gopacket.Packet, error) {
	n, err := rawsock.Read(ctx, l.c, l.ifi, l.buf, 100*time.Millisecond)
	if err != nil {
		return nil, err
	}
	data := append([]byte(nil), l.buf[:n]...)
	p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
	md := p.Metadata()
	md.Timestamp, md.CaptureLength, md.Length, md.InterfaceIndex = time.Now(), n, n, l.ifi.Index
	return p, nil
}

// Close ends the capture; the socket's promiscuous membership goes with it.
func (l *Live) Close() error { return l.c.Close() }
