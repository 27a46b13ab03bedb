package macmode

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// NDPResponder answers IPv6 neighbour solicitations for the IPv6 VIPs
// with the cluster MAC, where the kernel must not (multicast and IGMP
// modes: the VIPs are on lo, so the kernel answers nothing for them on
// the NIC): the IPv6 counterpart of Responder. It joins each VIP's
// solicited-node group on the NIC, so that solicitations reach it.
type NDPResponder struct {
	c    *ndp.Conn
	vips map[netip.Addr]bool
	mac  net.HardwareAddr
	once sync.Once

	// Counters.
	Answered, Ignored, Malformed, SendErrors atomic.Uint64
}

// NewNDPResponder opens an ICMPv6 socket on ifname (from its link-local
// address) for solicitations of vips, answered with clusterMAC.
func NewNDPResponder(ifname string, vips []netip.Addr, clusterMAC net.HardwareAddr) (*NDPResponder, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("ndp responder: %w", err)
	}
	// The link-local address may still be tentative (DAD) just after the
	// NIC came up: wait for it a little.
	var c *ndp.Conn
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ndp responder on %s (it needs the NIC's IPv6 link-local address): %w", ifname, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	if err := c.SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, fmt.Errorf("ndp responder: %w", err)
	}
	r := &NDPResponder{c: c, vips: map[netip.Addr]bool{}, mac: clusterMAC}
	for _, v := range vips {
		r.vips[v] = true
		g, err := ndp.SolicitedNodeMulticast(v)
		if err == nil {
			err = c.JoinGroup(g)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("ndp responder: join the solicited-node group of %s: %w", v, err)
		}
	}
	return r, nil
}

// Run answers solicitations until ctx ends or the responder is closed.
func (r *NDPResponder) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { r.c.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		m, _, src, err := r.c.ReadFrom()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed):
			return nil
		case err != nil:
			// An unparseable message is counted, not fatal.
			r.Malformed.Add(1)
			continue
		}
		v, na, dst := answerNS(m, src, r.vips, r.mac)
		switch v {
		case Ignore:
			r.Ignored.Add(1)
		case Answer:
			if err := r.c.WriteTo(na, nil, dst); err != nil {
				r.SendErrors.Add(1)
				continue
			}
			r.Answered.Add(1)
		}
	}
}

// Unsolicited announces every VIP at the cluster MAC to all nodes, so
// that neighbours update at once (the counterpart of gratuitous ARP).
func (r *NDPResponder) Unsolicited() error {
	for v := range r.vips {
		na := &ndp.NeighborAdvertisement{Override: true, TargetAddress: v,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: r.mac}}}
		if err := r.c.WriteTo(na, nil, allNodes); err != nil {
			return fmt.Errorf("unsolicited neighbour advertisement for %s: %w", v, err)
		}
	}
	return nil
}

// Close closes the socket; it is idempotent.
func (r *NDPResponder) Close() error {
	var err error
	r.once.Do(func() { err = r.c.Close() })
	return err
}
