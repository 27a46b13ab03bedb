package macmode

import (
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// Verdict is what the responder does with a received frame.
type Verdict uint8

const (
	Answer    Verdict = iota // a request for a VIP: reply
	Ignore                   // not for us, or someone's gratuitous ARP
	Malformed                // not a parseable Ethernet/ARP frame
)

// answer decides, without I/O, how to answer frame b: for a request (or a
// unicast probe) for one of vips from another address, a reply from the
// VIP at mac, sent to the requester.
func answer(b []byte, vips map[netip.Addr]bool, mac net.HardwareAddr) (Verdict, *arp.Packet) {
	var f ethernet.Frame
	var p arp.Packet
	if f.UnmarshalBinary(b) != nil || f.EtherType != ethernet.EtherTypeARP || p.UnmarshalBinary(f.Payload) != nil {
		return Malformed, nil
	}
	if p.Operation != arp.OperationRequest || !vips[p.TargetIP] || p.SenderIP == p.TargetIP {
		return Ignore, nil
	}
	reply, err := arp.NewPacket(arp.OperationReply, mac, p.TargetIP, p.SenderHardwareAddr, p.SenderIP)
	if err != nil {
		return Malformed, nil
	}
	return Answer, reply
}

// bcast is the Ethernet broadcast address.
var bcast = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
