package filter

import (
	"net/netip"
	"testing"
)

var (
	vip6    = netip.MustParseAddr("2001:2::10")
	client6 = netip.MustParseAddr("2001:2:0:1::20")
	other6  = netip.MustParseAddr("2001:2::99")
)

// testState6 is testState with an IPv6 VIP and a rule for it
// (vip6:80/tcp, single affinity).
func testState6(mark Mark) *State {
	s := testState(mark)
	s.VIPs = append(s.VIPs, vip6)
	s.Rules = append(s.Rules, PortRule{VIP: vip6, StartPort: 80, EndPort: 80, Protocol: ProtoTCP, Mode: ModeMultiple, Affinity: AffinitySingle})
	SortRules(s.Rules)
	var m Marks
	for b := range m {
		m[b] = mark
	}
	s.Marks[len(s.Rules)-1] = &m
	return s
}

func ruleIndex(t *testing.T, s *State, name string) int {
	for i, r := range s.Rules {
		if r.String() == name {
			return i
		}
	}
	t.Fatalf("no rule %s", name)
	return -1
}

// TestDecide6: the IPv6 decision, class by class, on built frames.
func TestDecide6(t *testing.T) {
	s := testState6(MarkOwned)
	r6 := ruleIndex(t, s, "2001:2::10:80/tcp")
	rAll := ruleIndex(t, s, "all:80-90/both")
	rOff := ruleIndex(t, s, "all:443/tcp")
	ext := func(n int, typ uint8) []Ext6 {
		var e []Ext6
		for range n {
			e = append(e, Ext6{Type: typ})
		}
		return e
	}
	for _, tt := range []struct {
		name   string
		p      *Packet
		reason Reason
		rule   int
	}{
		{"tcp to the VIP's rule", tcp(client6, 4000, vip6, 80, tcpFlagSYN), ReasonAcceptOwner, r6},
		{"an all-VIP rule takes IPv6", tcp(client6, 4000, vip6, 85, tcpFlagSYN), ReasonAcceptOwner, rAll},
		{"not a VIP", tcp(client6, 4000, other6, 80, tcpFlagSYN), ReasonPassNotVIP, -1},
		{"disabled rule", tcp(client6, 4000, vip6, 443, tcpFlagACK), ReasonDropRuleDisabled, rOff},
		{"udp remote control", udp(client6, 4000, vip6, 2504), ReasonPassRemoteControl, -1},
		{"through 3 extension headers", &Packet{Src: client6, Dst: vip6, Proto: ipProtoTCP, SPort: 1, DPort: 80, TCPFlags: tcpFlagSYN,
			Ext6: []Ext6{{Type: ip6HopByHop}, {Type: ip6Routing, Len: 2}, {Type: ip6DestOpts, Len: 1}}}, ReasonAcceptOwner, r6},
		{"at the extension header bound", &Packet{Src: client6, Dst: vip6, Proto: ipProtoTCP, SPort: 1, DPort: 80, TCPFlags: tcpFlagSYN,
			Ext6: ext(MaxExtHeaders6, ip6DestOpts)}, ReasonAcceptOwner, r6},
		{"past the extension header bound", &Packet{Src: client6, Dst: vip6, Proto: ipProtoTCP, SPort: 1, DPort: 80, TCPFlags: tcpFlagSYN,
			Ext6: ext(MaxExtHeaders6+1, ip6DestOpts)}, ReasonDropMalformed, -1},
		{"a header chain past the window", &Packet{Src: client6, Dst: vip6, Proto: ipProtoTCP, SPort: 1, DPort: 80, TCPFlags: tcpFlagSYN,
			Ext6: []Ext6{{Type: ip6DestOpts, Len: 255}}, Payload: make([]byte, 64)}, ReasonDropMalformed, -1},
		{"an atomic fragment is a whole packet", &Packet{Src: client6, Dst: vip6, Proto: ipProtoTCP, SPort: 1, DPort: 80, TCPFlags: tcpFlagSYN,
			Ext6: []Ext6{{Type: ip6Fragment}}}, ReasonAcceptOwner, r6},
		{"first fragment to a disabled port", &Packet{Src: client6, Dst: vip6, Proto: ipProtoTCP, SPort: 1, DPort: 443, MoreFragments: true}, ReasonDropRuleDisabled, rOff},
		{"first fragment: the first enabled rule for (VIP, tcp)", &Packet{Src: client6, Dst: vip6, Proto: ipProtoTCP, SPort: 1, DPort: 80, MoreFragments: true}, ReasonAcceptOwner, r6},
		{"later fragment", &Packet{Src: client6, Dst: vip6, Proto: ipProtoUDP, FragOffset: 10}, ReasonAcceptOwner, rAll},
		{"echo request: the default host", &Packet{Src: client6, Dst: vip6, Proto: ipProtoICMP6, ICMPType: icmp6EchoRequest}, ReasonAcceptOwner, DefaultRule},
		{"neighbour solicitation to the VIP passes", &Packet{Src: client6, Dst: vip6, Proto: ipProtoICMP6, ICMPType: 135}, ReasonPassARP, -1},
		{"MLDv2 report passes", &Packet{Src: client6, Dst: vip6, Proto: ipProtoICMP6, ICMPType: 143}, ReasonPassARP, -1},
		{"packet too big about a flow: that flow's rule", &Packet{Src: other6, Dst: vip6, Proto: ipProtoICMP6, ICMPType: icmp6PacketTooBig,
			Inner: tcp(vip6, 80, client6, 4000, tcpFlagACK)}, ReasonAcceptOwner, r6},
		{"an error quoting another source", &Packet{Src: other6, Dst: vip6, Proto: ipProtoICMP6, ICMPType: icmp6DestUnreach,
			Inner: tcp(other6, 80, client6, 4000, tcpFlagACK)}, ReasonDropMalformed, -1},
		{"an error quoting a later fragment", &Packet{Src: other6, Dst: vip6, Proto: ipProtoICMP6, ICMPType: icmp6TimeExceeded,
			Inner: &Packet{Src: vip6, Dst: client6, Proto: ipProtoUDP, FragOffset: 3}}, ReasonDropMalformed, -1},
	} {
		got := Decide(tt.p.Frame(), s, nil)
		if got.Reason != tt.reason || got.Rule != tt.rule {
			t.Errorf("%s: got %v rule %d, want %v rule %d", tt.name, got.Reason, got.Rule, tt.reason, tt.rule)
		}
	}
	// The ICMPv6 error lands in the bucket of the flow it quotes.
	f := tcp(client6, 4000, vip6, 80, tcpFlagACK)
	e := &Packet{Src: other6, Dst: vip6, Proto: ipProtoICMP6, ICMPType: icmp6PacketTooBig, Inner: tcp(vip6, 80, client6, 4000, tcpFlagACK)}
	if a, b := Decide(f.Frame(), s, nil), Decide(e.Frame(), s, nil); a.Bucket != b.Bucket {
		t.Errorf("flow in bucket %d, its ICMPv6 error in %d", a.Bucket, b.Bucket)
	}
	// Truncated: every prefix of a frame with headers is short, malformed
	// or decided like the whole; never a different accept.
	whole := f.Frame()
	if d := Decide(whole[:14+39], s, nil); d.Reason != ReasonPassShort {
		t.Errorf("39-byte IPv6 header: %v, want passed-short", d.Reason)
	}
	for n := 14 + 40; n < 14+40+20; n++ {
		if d := Decide(whole[:n], s, nil); d.Reason != ReasonDropMalformed {
			t.Errorf("frame cut at %d: %v, want dropped-malformed", n, d.Reason)
		}
	}
}

// TestBucket6: `network` affinity hashes the client's prefix; `single`
// the whole address; `none` the port too; IPv4-mapped clients hash as
// IPv4.
func TestBucket6(t *testing.T) {
	seed := Seed{1, 2, 3}
	a := netip.MustParseAddr("2001:2:0:1::1")
	b := netip.MustParseAddr("2001:2:0:1:ffff::2") // same /64
	c := netip.MustParseAddr("2001:2:0:2::1")      // another /64
	if bucket(seed, a, 1, AffinityNetwork, 64) != bucket(seed, b, 2, AffinityNetwork, 64) {
		t.Error("two clients of one /64 in different buckets under network affinity")
	}
	differ := 0
	for i := range 64 {
		x := netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 0, 0, 0, byte(i), 15: 1})
		if bucket(seed, x, 0, AffinityNetwork, 64) != bucket(seed, c, 0, AffinityNetwork, 64) {
			differ++
		}
	}
	if differ < 60 {
		t.Errorf("only %d of 64 /64s away from another's bucket", differ)
	}
	if bucket(seed, a, 1, AffinityNetwork, 48) != bucket(seed, c, 1, AffinityNetwork, 48) {
		t.Error("two /64s of one /48 in different buckets under a /48 network affinity")
	}
	if bucket(seed, a, 1, AffinitySingle, 64) != bucket(seed, a, 2, AffinitySingle, 64) {
		t.Error("single affinity depends on the port")
	}
	m := netip.AddrFrom16(netip.MustParseAddr("198.19.1.20").As16())
	if bucket(seed, m, 5, AffinityNone, 64) != Bucket(seed, netip.MustParseAddr("198.19.1.20"), 5, AffinityNone) {
		t.Error("an IPv4-mapped client hashes apart from its IPv4 address")
	}
	for _, bits := range []int{0, 1, 63, 64, 65, 127, 128} {
		hi, lo := Prefix6Masks(bits)
		if n := popcount(hi) + popcount(lo); n != bits {
			t.Errorf("Prefix6Masks(%d) has %d bits", bits, n)
		}
	}
}

func popcount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}
