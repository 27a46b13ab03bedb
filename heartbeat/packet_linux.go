package heartbeat

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"

	"github.com/nlbproject/nlb/internal/rawsock"
)

// PacketConn sends and receives heartbeats as raw Ethernet frames
// (ethertype 0x886F) on one NIC with an AF_PACKET socket.
type PacketConn struct {
	c    *packet.Conn
	ifi  *net.Interface
	dst  net.HardwareAddr
	once sync.Once
	// closed is set by Close before the socket closes, so a reader can
	// tell its read error apart from a failure.
	closed atomic.Bool

	mu       sync.Mutex
	drops    uint64 // kernel drops read so far (PACKET_STATISTICS resets on read)
	unparsed atomic.Uint64
}

// Dropped counts frames lost before they reached Receive's caller: the
// kernel's drops when the socket's buffer was full (PACKET_STATISTICS),
// and frames that were not valid Ethernet heartbeat frames.
func (p *PacketConn) Dropped() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if st, err := p.c.Stats(); err == nil {
		p.drops += uint64(st.Drops)
	}
	return p.drops + p.unparsed.Load()
}

var _ Conn = (*PacketConn)(nil)

// ListenPacket opens a heartbeat socket on ifname. Frames go to dst: the
// broadcast address in unicast mode, the cluster multicast MAC in the
// multicast modes.
func ListenPacket(ifname string, dst net.HardwareAddr) (*PacketConn, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("heartbeat interface %s: %w", ifname, err)
	}
	c, err := packet.Listen(ifi, packet.Raw, EtherType, nil)
	if err != nil {
		return nil, fmt.Errorf("heartbeat socket on %s: %w", ifname, err)
	}
	return &PacketConn{c: c, ifi: ifi, dst: dst}, nil
}

// Send broadcasts one message.
func (p *PacketConn) Send(msg []byte) error {
	f := ethernet.Frame{Destination: p.dst, Source: p.ifi.HardwareAddr, EtherType: EtherType, Payload: msg}
	b, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = p.c.WriteTo(b, &packet.Addr{HardwareAddr: p.dst})
	return err
}

// Receive returns the next heartbeat frame.
func (p *PacketConn) Receive(ctx context.Context) (Frame, error) {
	buf := make([]byte, 2048)
	for {
		// ctx's end or Close unblocks it at once.
		n, err := rawsock.Read(ctx, p.c, p.ifi, buf, 100*time.Millisecond)
		if err != nil {
			if p.closed.Load() {
				return Frame{}, ErrClosed
			}
			return Frame{}, err
		}
		var f ethernet.Frame
		if err := f.UnmarshalBinary(buf[:n]); err != nil || f.EtherType != EtherType {
			p.unparsed.Add(1)
			continue
		}
		fr := Frame{Payload: append([]byte(nil), f.Payload...)}
		copy(fr.Source[:], f.Source)
		return fr, nil
	}
}

// Close closes the socket; it is idempotent.
func (p *PacketConn) Close() error {
	var err error
	p.once.Do(func() {
		p.closed.Store(true)
		err = p.c.Close()
	})
	return err
}
