// Package framegen builds test frames with gopacket, independently of
// filter.Packet, for the differential and parse tests.
package framegen

import (
	"math/rand/v2"
	"net"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Frame builds a frame from client:cport to vip:vport with
// gopacket's layers, independently of Packet.Frame, for the differential
// and parse tests: TCP (random flags) or UDP, computed checksums and
// lengths, sometimes IPv4 options, sometimes an 802.1Q tag (which the
// filter passes as not IPv4), sometimes a first or later fragment, and
// sometimes a payload.
func Frame(r *rand.Rand, client netip.Addr, cport uint16, vip netip.Addr, vport uint16) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0x66, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0xbf, 198, 18, 0, 100},
		EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Id: uint16(r.Uint32()), SrcIP: client.AsSlice(), DstIP: vip.AsSlice()}
	if r.IntN(4) == 0 {
		ip.Options = []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 0}} // NOPs, end
		if r.IntN(2) == 0 {
			ip.Options = []layers.IPv4Option{{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}, {OptionType: 0}} // record route
		}
	}
	switch r.IntN(8) {
	case 0:
		ip.Flags = layers.IPv4MoreFragments
	case 1:
		ip.FragOffset = uint16(1 + r.IntN(100))
	}
	ls := []gopacket.SerializableLayer{eth}
	if r.IntN(8) == 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: uint16(1 + r.IntN(4094)), Type: layers.EthernetTypeIPv4})
	}
	ls = append(ls, ip)
	if r.IntN(3) == 0 {
		ip.Protocol = layers.IPProtocolUDP
		udp := &layers.UDP{SrcPort: layers.UDPPort(cport), DstPort: layers.UDPPort(vport)}
		udp.SetNetworkLayerForChecksum(ip)
		ls = append(ls, udp)
	} else {
		ip.Protocol = layers.IPProtocolTCP
		tcp := &layers.TCP{SrcPort: layers.TCPPort(cport), DstPort: layers.TCPPort(vport), Seq: r.Uint32(), Window: 1024,
			SYN: r.IntN(2) == 0, ACK: r.IntN(2) == 0, FIN: r.IntN(8) == 0, RST: r.IntN(16) == 0, PSH: r.IntN(4) == 0}
		if r.IntN(3) == 0 {
			tcp.Options = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}
		}
		tcp.SetNetworkLayerForChecksum(ip)
		ls = append(ls, tcp)
	}
	if n := r.IntN(3); n > 0 {
		ls = append(ls, gopacket.Payload(make([]byte, n*100)))
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		panic(err)
	}
	return buf.Bytes()
}
