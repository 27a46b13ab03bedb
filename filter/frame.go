package filter

import (
	"encoding/binary"
	"net/netip"
	"sort"
)

// Packet describes an IPv4 packet to build as an Ethernet frame. It is used
// by `nlbctl filter` to ask the model about a flow, and by tests to generate
// traffic; it builds well-formed frames only (tests damage them afterwards).
type Packet struct {
	Src, Dst     netip.Addr
	Proto        uint8 // 6 TCP, 17 UDP, 1 ICMP, others raw
	SPort, DPort uint16
	TCPFlags     uint8
	// ICMPType/ICMPCode for Proto 1; for error types, Inner is quoted.
	ICMPType, ICMPCode uint8
	Inner              *Packet
	IPOptions          []byte // padded to a multiple of 4
	TCPOptions         []byte // padded to a multiple of 4
	FragOffset         uint16 // in 8-byte units
	MoreFragments      bool
	Payload            []byte
}

// Frame returns the packet as an Ethernet II frame with placeholder MACs.
func (p *Packet) Frame() []byte {
	f := make([]byte, ethHdrLen, 128)
	copy(f[0:6], []byte{0x02, 0xbf, 0, 0, 0, 1})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 2})
	binary.BigEndian.PutUint16(f[12:14], etherTypeIP4)
	return append(f, p.ipv4()...)
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (p *Packet) ipv4() []byte {
	opts := pad4(append([]byte(nil), p.IPOptions...))
	ihl := ipv4MinLen + len(opts)
	var l4 []byte
	switch p.Proto {
	case ipProtoTCP:
		topts := pad4(append([]byte(nil), p.TCPOptions...))
		l4 = make([]byte, 20+len(topts))
		binary.BigEndian.PutUint16(l4[0:2], p.SPort)
		binary.BigEndian.PutUint16(l4[2:4], p.DPort)
		binary.BigEndian.PutUint32(l4[4:8], 1000)
		l4[12] = byte(len(l4)/4) << 4
		l4[13] = p.TCPFlags
		binary.BigEndian.PutUint16(l4[14:16], 65535)
		copy(l4[20:], topts)
	case ipProtoUDP:
		l4 = make([]byte, 8)
		binary.BigEndian.PutUint16(l4[0:2], p.SPort)
		binary.BigEndian.PutUint16(l4[2:4], p.DPort)
		binary.BigEndian.PutUint16(l4[4:6], uint16(8+len(p.Payload)))
	case ipProtoICMP:
		l4 = make([]byte, 8)
		l4[0], l4[1] = p.ICMPType, p.ICMPCode
		binary.BigEndian.PutUint16(l4[4:6], p.SPort) // echo identifier
		if p.Inner != nil {
			l4 = append(l4, p.Inner.ipv4()...)
		}
	}
	l4 = append(l4, p.Payload...)
	ip := make([]byte, ihl, ihl+len(l4))
	ip[0] = 0x40 | byte(ihl/4)
	binary.BigEndian.PutUint16(ip[2:4], uint16(ihl+len(l4)))
	binary.BigEndian.PutUint16(ip[4:6], 0x1234)
	frag := p.FragOffset & 0x1fff
	if p.MoreFragments {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:8], frag)
	ip[8] = 64
	ip[9] = p.Proto
	a, b := p.Src.As4(), p.Dst.As4()
	copy(ip[12:16], a[:])
	copy(ip[16:20], b[:])
	copy(ip[20:], opts)
	binary.BigEndian.PutUint16(ip[10:12], checksum(ip))
	return append(ip, l4...)
}

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// SortRules puts rules in canonical order: rules for a specific VIP first
// (by VIP, then start port, then protocol), then all-VIP rules (by start
// port, then protocol). Every host orders rules the same way, so a rule's
// index is the same cluster-wide, and the first match is the most specific.
func SortRules(rules []PortRule) {
	sort.SliceStable(rules, func(i, j int) bool {
		a, b := rules[i], rules[j]
		if a.AllVIPs() != b.AllVIPs() {
			return !a.AllVIPs()
		}
		if c := a.VIP.Compare(b.VIP); c != 0 {
			return c < 0
		}
		if a.StartPort != b.StartPort {
			return a.StartPort < b.StartPort
		}
		return a.Protocol < b.Protocol
	})
}

// Overlap reports whether two rules claim some of the same traffic at the
// same precedence (same VIP or both all-VIP, overlapping ports and
// protocols). A VIP-specific rule overlapping an all-VIP rule is allowed:
// the specific one wins.
func Overlap(a, b PortRule) bool {
	if a.AllVIPs() != b.AllVIPs() || a.VIP != b.VIP {
		return false
	}
	if a.Protocol&b.Protocol == 0 {
		return false
	}
	return a.StartPort <= b.EndPort && b.StartPort <= a.EndPort
}
