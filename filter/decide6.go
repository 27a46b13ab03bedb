package filter

import (
	"encoding/binary"
	"net/netip"
)

// IPv6 (docs/datapath.md, "IPv6"). The decision is IPv4's, with IPv6's
// header chain walked to the transport header: hop-by-hop, routing and
// destination options headers are skipped, a fragment header makes the
// packet a fragment (unless it is an atomic fragment, offset 0 and no
// more fragments, RFC 6946), and anything else ends the chain.
const (
	etherTypeIP6 = 0x86dd
	ipv6HdrLen   = 40
	ipProtoICMP6 = 58

	ip6HopByHop = 0
	ip6Routing  = 43
	ip6Fragment = 44
	ip6DestOpts = 60

	icmp6DestUnreach  = 1
	icmp6PacketTooBig = 2
	icmp6TimeExceeded = 3
	icmp6ParamProblem = 4
	icmp6EchoRequest  = 128

	// MaxExtHeaders6 bounds the walk: a chain of more extension headers
	// before the transport header is malformed.
	MaxExtHeaders6 = 8
	// HeaderWindow6 bounds where the IPv6 decision reads: every byte it
	// needs lies within the frame's first HeaderWindow6 bytes, or the
	// frame is malformed. (The kernel pulls this much into the linear
	// part of the packet; RFC 7112 asks the whole header chain to be in
	// the first fragment, and real chains are far shorter.)
	HeaderWindow6 = ethHdrLen + 512

	// DefaultPrefix6 is the client prefix `network` affinity hashes for
	// IPv6 when the configuration names none.
	DefaultPrefix6 = 64
)

// chain6 is the result of walking an IPv6 header chain.
type chain6 struct {
	proto   uint8 // the transport protocol (next header after the chain)
	off     int   // its offset from the start of the IPv6 header
	frag    bool  // a fragment: offset or more-fragments set
	fragOff uint16
	ok      bool // false: truncated, outside the window, or too long
}

// walk6 walks the header chain of the IPv6 packet at ip, which starts at
// frame offset base; ip ends where the packet (or the frame) ends.
func walk6(ip []byte, base int) chain6 {
	in := func(off, n int) bool { return off+n <= len(ip) && base+off+n <= HeaderWindow6 }
	nh, off := ip[6], ipv6HdrLen
	for i := 0; ; i++ {
		switch nh {
		case ip6HopByHop, ip6Routing, ip6DestOpts, ip6Fragment:
		default:
			return chain6{proto: nh, off: off, ok: true}
		}
		if i == MaxExtHeaders6 {
			return chain6{}
		}
		if nh == ip6Fragment {
			if !in(off, 8) {
				return chain6{}
			}
			f := binary.BigEndian.Uint16(ip[off+2 : off+4])
			nh, off = ip[off], off+8
			if fo, more := f>>3, f&1 != 0; fo != 0 || more {
				return chain6{proto: nh, off: off, frag: true, fragOff: fo, ok: true}
			}
			continue // an atomic fragment: a whole packet
		}
		if !in(off, 2) {
			return chain6{}
		}
		nh, off = ip[off], off+(int(ip[off+1])+1)*8
	}
}

// isVIP reports whether dst is one of the state's VIPs.
func (s *State) isVIP(dst netip.Addr) bool {
	for i, v := range s.VIPs {
		if i >= MaxVIPs {
			break
		}
		if v == dst {
			return true
		}
	}
	return false
}

// decide6 is Decide for an IPv6 frame.
func (s *State) decide6(frame []byte, holds HoldsFunc) Decision {
	ip := frame[ethHdrLen:]
	if len(ip) < ipv6HdrLen {
		return noFlow(ReasonPassShort)
	}
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	if !s.isVIP(dst) {
		return noFlow(ReasonPassNotVIP)
	}
	// From here on the frame is for a VIP: broken headers are dropped.
	if ip[0]>>4 != 6 {
		return noFlow(ReasonDropMalformed)
	}
	// The payload length bounds the packet (Ethernet padding is not part
	// of it); 0 (a jumbogram, or a GRO packet past 64 KiB) runs to the
	// end of the frame.
	if plen := int(binary.BigEndian.Uint16(ip[4:6])); plen != 0 && ipv6HdrLen+plen < len(ip) {
		ip = ip[:ipv6HdrLen+plen]
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	in := func(off, n int) bool { return off+n <= len(ip) && ethHdrLen+off+n <= HeaderWindow6 }
	c := walk6(ip, ethHdrLen)
	if !c.ok {
		return noFlow(ReasonDropMalformed)
	}
	proto, off := c.proto, c.off
	if c.frag {
		// As IPv4: every fragment goes where the client address hashes
		// in the first rule for (VIP, protocol) that is not disabled; a
		// first fragment to a disabled rule's port is dropped everywhere.
		if c.fragOff == 0 && (proto == ipProtoTCP || proto == ipProtoUDP) && in(off, 4) {
			if pr := s.matchRule(dst, binary.BigEndian.Uint16(ip[off+2:off+4]), proto, false); pr != DefaultRule && s.Rules[pr].Mode == ModeDisabled {
				return verdict(ReasonDropRuleDisabled, pr, -1)
			}
		}
		ri := s.matchRule(dst, 0, proto, true)
		return s.decideFlow(ri, src, 0, dst, 0, classStateless, holds)
	}
	switch proto {
	case ipProtoTCP:
		if !in(off, 20) {
			return noFlow(ReasonDropMalformed)
		}
		if doff := int(ip[off+12]>>4) * 4; doff < 20 || len(ip)-off < doff {
			return noFlow(ReasonDropMalformed)
		}
		sport := binary.BigEndian.Uint16(ip[off : off+2])
		dport := binary.BigEndian.Uint16(ip[off+2 : off+4])
		class := classTCP
		if ip[off+13]&(tcpFlagSYN|tcpFlagACK) == tcpFlagSYN {
			class = classTCPSyn
		}
		return s.decideFlow(s.matchRule(dst, dport, proto, false), src, sport, dst, dport, class, holds)
	case ipProtoUDP:
		if !in(off, 8) {
			return noFlow(ReasonDropMalformed)
		}
		sport := binary.BigEndian.Uint16(ip[off : off+2])
		dport := binary.BigEndian.Uint16(ip[off+2 : off+4])
		if s.RemotePort != 0 && dport == s.RemotePort {
			return noFlow(ReasonPassRemoteControl)
		}
		return s.decideFlow(s.matchRule(dst, dport, proto, false), src, sport, dst, dport, classStateless, holds)
	case ipProtoICMP6:
		if !in(off, 8) {
			return noFlow(ReasonDropMalformed)
		}
		switch t := ip[off]; {
		case t >= icmp6DestUnreach && t <= icmp6ParamProblem:
			return s.decideICMP6Error(dst, ip, off+8, holds)
		case t >= 130 && t <= 137 || t == 143:
			// Multicast listener and neighbour discovery: every host's
			// stack needs them, as ARP.
			return noFlow(ReasonPassARP)
		}
		// Echo requests and other ICMPv6: one host, the default host.
		return s.decideFlow(DefaultRule, src, 0, dst, 0, classStateless, holds)
	}
	return s.decideFlow(DefaultRule, src, 0, dst, 0, classStateless, holds)
}

// decideICMP6Error decides an ICMPv6 error by the packet it quotes at
// ip[q:], one the cluster sent from vip to a client.
func (s *State) decideICMP6Error(vip netip.Addr, ip []byte, q int, holds HoldsFunc) Decision {
	if q+ipv6HdrLen > len(ip) || ethHdrLen+q+ipv6HdrLen > HeaderWindow6 {
		return noFlow(ReasonDropMalformed)
	}
	inner := ip[q:]
	if inner[0]>>4 != 6 || netip.AddrFrom16([16]byte(inner[8:24])) != vip {
		return noFlow(ReasonDropMalformed)
	}
	client := netip.AddrFrom16([16]byte(inner[24:40]))
	c := walk6(inner, ethHdrLen+q)
	if !c.ok || c.frag && c.fragOff != 0 {
		return noFlow(ReasonDropMalformed) // quotes a non-first fragment: no ports
	}
	if c.proto != ipProtoTCP && c.proto != ipProtoUDP {
		return s.decideFlow(DefaultRule, client, 0, vip, 0, classStateless, holds)
	}
	if c.off+8 > len(inner) || ethHdrLen+q+c.off+8 > HeaderWindow6 {
		return noFlow(ReasonDropMalformed)
	}
	vport := binary.BigEndian.Uint16(inner[c.off : c.off+2])
	cport := binary.BigEndian.Uint16(inner[c.off+2 : c.off+4])
	class := classStateless
	if c.proto == ipProtoTCP {
		class = classTCP
	}
	return s.decideFlow(s.matchRule(vip, vport, c.proto, false), client, cport, vip, vport, class, holds)
}
