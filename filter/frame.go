package filter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"sort"
)

// Packet describes an IPv4 or IPv6 packet (by the family of Src and Dst)
// to build as an Ethernet frame. It is used by `nlbctl filter` to ask the
// model about a flow, and by tests to generate traffic; it builds
// well-formed frames only (tests damage them afterwards).
type Packet struct {
	Src, Dst     netip.Addr
	Proto        uint8 // 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, others raw
	SPort, DPort uint16
	TCPFlags     uint8
	// ICMPType/ICMPCode for Proto 1; for error types, Inner is quoted.
	ICMPType, ICMPCode uint8
	Inner              *Packet
	IPOptions          []byte // padded to a multiple of 4
	TCPOptions         []byte // padded to a multiple of 4
	FragOffset         uint16 // in 8-byte units
	MoreFragments      bool
	// Ext6 are IPv6 extension headers before the transport header (a
	// fragment header follows them when FragOffset or MoreFragments
	// is set).
	Ext6    []Ext6
	Payload []byte
}

// Ext6 is an IPv6 extension header to build: hop-by-hop (0), routing (43),
// destination options (60) or fragment (44, always 8 bytes), Len 8-byte
// units after the first 8 (as the header's own length field).
type Ext6 struct{ Type, Len uint8 }

// Frame returns the packet as an Ethernet II frame with placeholder MACs.
func (p *Packet) Frame() []byte {
	f := make([]byte, ethHdrLen, 128)
	copy(f[0:6], []byte{0x02, 0xbf, 0, 0, 0, 1})
	copy(f[6:12], []byte{0x02, 0, 0, 0, 0, 2})
	if p.Src.Is6() {
		binary.BigEndian.PutUint16(f[12:14], etherTypeIP6)
		return append(f, p.ipv6()...)
	}
	binary.BigEndian.PutUint16(f[12:14], etherTypeIP4)
	return append(f, p.ipv4()...)
}

// l4 builds the transport header and payload; quote builds a quoted
// inner packet.
func (p *Packet) l4(quote func(*Packet) []byte) []byte {
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
	case ipProtoICMP, ipProtoICMP6:
		l4 = make([]byte, 8)
		l4[0], l4[1] = p.ICMPType, p.ICMPCode
		binary.BigEndian.PutUint16(l4[4:6], p.SPort) // echo identifier
		if p.Inner != nil {
			l4 = append(l4, quote(p.Inner)...)
		}
	}
	return append(l4, p.Payload...)
}

func (p *Packet) ipv6() []byte {
	hdrs := p.Ext6
	if p.FragOffset != 0 || p.MoreFragments {
		hdrs = append(append([]Ext6(nil), hdrs...), Ext6{Type: ip6Fragment})
	}
	ip := make([]byte, ipv6HdrLen, 128)
	ip[0] = 0x60
	ip[7] = 64
	a, b := p.Src.As16(), p.Dst.As16()
	copy(ip[8:24], a[:])
	copy(ip[24:40], b[:])
	next := 6 // where the next-header value goes
	for _, h := range hdrs {
		ip[next] = h.Type
		e := make([]byte, 8)
		if h.Type == ip6Fragment {
			f := p.FragOffset << 3
			if p.MoreFragments {
				f |= 1
			}
			binary.BigEndian.PutUint16(e[2:4], f)
			binary.BigEndian.PutUint32(e[4:8], 0x1234)
		} else {
			e = make([]byte, 8*(1+int(h.Len)))
			e[1] = h.Len
			e[2] = 1 // a PadN option over the rest
			e[3] = byte(len(e) - 4)
		}
		next = len(ip)
		ip = append(ip, e...)
	}
	ip[next] = p.Proto
	ip = append(ip, p.l4(func(q *Packet) []byte { return q.ipv6() })...)
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(ip)-ipv6HdrLen))
	return ip
}

// ParseFlow parses a flow's client and VIP, each "address:port" (an
// IPv6 address in brackets), which must be of one family.
func ParseFlow(client, vip string) (c, v netip.AddrPort, err error) {
	if c, err = netip.ParseAddrPort(client); err != nil {
		return c, v, fmt.Errorf("client %q: want IPv4:port or [IPv6]:port", client)
	}
	if v, err = netip.ParseAddrPort(vip); err != nil {
		return c, v, fmt.Errorf("VIP %q: want IPv4:port or [IPv6]:port", vip)
	}
	c = netip.AddrPortFrom(c.Addr().Unmap(), c.Port())
	v = netip.AddrPortFrom(v.Addr().Unmap(), v.Port())
	if c.Addr().Is4() != v.Addr().Is4() {
		return c, v, fmt.Errorf("client %s and VIP %s: not of one IP family", c, v)
	}
	return c, v, nil
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
	l4 := p.l4(func(q *Packet) []byte { return q.ipv4() })
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
