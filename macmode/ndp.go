package macmode

import (
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
)

// allNodes is ff02::1, where an advertisement to a host that has no
// address yet (duplicate address detection) goes.
var allNodes = netip.MustParseAddr("ff02::1")

// answerNS decides, without I/O, how to answer a neighbour discovery
// message m from src: for a solicitation of one of vips, an advertisement
// of the VIP at mac, and where to send it — back to the solicitor, or to
// all nodes (unsolicited, RFC 4861 §7.2.4) when the solicitor has no
// address yet.
func answerNS(m ndp.Message, src netip.Addr, vips map[netip.Addr]bool, mac net.HardwareAddr) (Verdict, *ndp.NeighborAdvertisement, netip.Addr) {
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok {
		return Ignore, nil, netip.Addr{}
	}
	if !vips[ns.TargetAddress] || vips[src] {
		return Ignore, nil, netip.Addr{}
	}
	na := &ndp.NeighborAdvertisement{Solicited: true, Override: true, TargetAddress: ns.TargetAddress,
		Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}}}
	if src.IsUnspecified() {
		na.Solicited = false
		return Answer, na, allNodes
	}
	return Answer, na, src
}
