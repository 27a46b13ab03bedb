package macmode

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"

	"github.com/nlbproject/nlb/internal/rawsock"
)

// Responder answers ARP for the VIPs with the cluster MAC, where the kernel
// must not (multicast and IGMP modes: the VIPs are on lo, arp_ignore=1).
// It answers broadcast requests and the unicast probes a Linux client sends
// to refresh its entry. Replies carry the cluster MAC in the ARP payload and
// the NIC's own MAC as Ethernet source: a bridge drops frames whose source
// is a multicast address.
type Responder struct {
	c    *packet.Conn
	ifi  *net.Interface
	vips map[netip.Addr]bool
	mac  net.HardwareAddr // the cluster MAC announced for the VIPs
	once sync.Once

	// Counters.
	Answered, Ignored, Malformed, SendErrors atomic.Uint64
}

// NewResponder opens an ARP socket on ifname.
func NewResponder(ifname string, vips []netip.Addr, clusterMAC net.HardwareAddr) (*Responder, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("arp responder: %w", err)
	}
	c, err := packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, fmt.Errorf("arp responder on %s: %w", ifname, err)
	}
	r := &Responder{c: c, ifi: ifi, vips: map[netip.Addr]bool{}, mac: clusterMAC}
	for _, v := range vips {
		if v.Is4() { // IPv6 VIPs: NDPResponder
			r.vips[v] = true
		}
	}
	return r, nil
}

// Run answers requests until ctx ends or the Responder is closed.
func (r *Responder) Run(ctx context.Context) error {
	buf := make([]byte, 1500)
	for {
		n, err := rawsock.Read(ctx, r.c, r.ifi, buf, 200*time.Millisecond)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("arp responder: %w", err)
		}
		if err := r.handle(buf[:n]); err != nil {
			return err
		}
	}
}

func (r *Responder) handle(b []byte) error {
	switch v, reply := answer(b, r.vips, r.mac); v {
	case Malformed:
		r.Malformed.Add(1)
	case Ignore:
		r.Ignored.Add(1)
	case Answer:
		// A failed reply is counted, never fatal: the sender's address
		// comes from the wire.
		if err := r.send(reply.TargetHardwareAddr, reply); err != nil {
			r.SendErrors.Add(1)
			return nil
		}
		r.Answered.Add(1)
	}
	return nil
}

func (r *Responder) send(dst net.HardwareAddr, p *arp.Packet) error {
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f := ethernet.Frame{Destination: dst, Source: r.ifi.HardwareAddr, EtherType: ethernet.EtherTypeARP, Payload: pb}
	fb, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	_, err = r.c.WriteTo(fb, &packet.Addr{HardwareAddr: dst})
	return err
}

// Gratuitous announces every VIP at the cluster MAC (an ARP request from
// and for the VIP, broadcast), so that neighbours update at once: on
// start, when the host starts or stops serving, and on a mode change.
func (r *Responder) Gratuitous() error {
	for v := range r.vips {
		p, err := arp.NewPacket(arp.OperationRequest, r.mac, v, bcast, v)
		if err != nil {
			return err
		}
		if err := r.send(bcast, p); err != nil {
			return fmt.Errorf("gratuitous arp for %s: %w", v, err)
		}
	}
	return nil
}

// Solicit asks, at the cluster MAC, for target's MAC on behalf of from (a
// VIP): an ARP request "who has target, tell from", broadcast. A Linux
// router (and most others) creates a neighbour entry for the sender of
// a request addressed to it: the BGP next hop is then resolved before
// the first flow needs it (docs/scale-out.md).
func (r *Responder) Solicit(target, from netip.Addr) error {
	p, err := arp.NewPacket(arp.OperationRequest, r.mac, from, bcast, target)
	if err != nil {
		return err
	}
	if err := r.send(bcast, p); err != nil {
		return fmt.Errorf("arp request for %s from %s: %w", target, from, err)
	}
	return nil
}

// Close closes the socket; it is idempotent.
func (r *Responder) Close() error {
	var err error
	r.once.Do(func() { err = r.c.Close() })
	return err
}
