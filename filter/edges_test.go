package filter

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestNoFlowDecisions: a frame decided before any rule (passed, or dropped
// as malformed) names no rule and no bucket; a flow decision names both
// in range. Random frames, damaged at random, cover every early exit.
func TestNoFlowDecisions(t *testing.T) {
	s := testState(MarkOwned)
	r := rand.New(rand.NewPCG(3, 4))
	seen := map[Reason]int{}
	for i := 0; i < 20000; i++ {
		p := &Packet{Src: client, Dst: []netip.Addr{vip1, vip2, other}[r.IntN(3)],
			Proto: []uint8{ipProtoTCP, ipProtoUDP, ipProtoICMP, 47}[r.IntN(4)],
			SPort: uint16(r.IntN(65536)), DPort: []uint16{80, 53, 85, 443, 2504, 9}[r.IntN(6)], TCPFlags: uint8(r.IntN(256))}
		if p.Proto == ipProtoICMP {
			p.ICMPType = []uint8{0, 3, 8, 11, 12}[r.IntN(5)]
			if p.ICMPType != 0 && p.ICMPType != 8 {
				p.Inner = tcp(p.Dst, 80, client, 40000, tcpFlagACK)
			}
		}
		f := p.Frame()
		switch r.IntN(4) {
		case 0:
			f = f[:r.IntN(len(f)+1)]
		case 1:
			f[r.IntN(len(f))] = byte(r.IntN(256))
		}
		d := Decide(f, s, nil)
		seen[d.Reason]++
		switch d.Reason {
		case ReasonPassNotIP, ReasonPassARP, ReasonPassHeartbeat, ReasonPassShort, ReasonPassNotVIP, ReasonPassRemoteControl, ReasonDropMalformed:
			if d.Rule != -1 || d.Bucket != -1 {
				t.Fatalf("%v decided with rule %d bucket %d, want -1 -1", d.Reason, d.Rule, d.Bucket)
			}
		case ReasonDropRuleDisabled:
			if d.Rule < 0 || d.Rule >= len(s.Rules) || d.Bucket != -1 {
				t.Fatalf("%v: rule %d bucket %d", d.Reason, d.Rule, d.Bucket)
			}
		default:
			if d.Rule < 0 || d.Rule > DefaultRule || d.Bucket < 0 || d.Bucket >= Buckets {
				t.Fatalf("%v: rule %d bucket %d out of range", d.Reason, d.Rule, d.Bucket)
			}
		}
	}
	for _, want := range []Reason{ReasonPassNotIP, ReasonPassShort, ReasonPassNotVIP, ReasonPassRemoteControl, ReasonDropMalformed, ReasonDropRuleDisabled, ReasonAcceptOwner} {
		if seen[want] == 0 {
			t.Errorf("no frame decided %v: the generator misses a path (%v)", want, seen)
		}
	}
}

// TestDecideBoundaries: frames exactly at each length limit.
func TestDecideBoundaries(t *testing.T) {
	s := testState(MarkOwned)
	syn := tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame()
	eth := func(typ uint16, n int) []byte {
		f := make([]byte, n)
		binary.BigEndian.PutUint16(f[12:14], typ)
		return f
	}
	cases := []struct {
		name  string
		frame []byte
		want  Reason
	}{
		{"13 bytes", syn[:13], ReasonPassNotIP},
		{"ethernet header only, IPv4", eth(etherTypeIP4, 14), ReasonPassShort},
		{"ARP", eth(etherTypeARP, 42), ReasonPassARP},
		{"heartbeat", heartbeatFrame(vip1), ReasonPassHeartbeat},
		{"heartbeat junk", eth(EtherTypeHeartbeat, 60), ReasonDropMalformed},
		{"heartbeat of another cluster", heartbeatFrame(vip2), ReasonDropMalformed},
		{"heartbeat of another version", withByte(heartbeatFrame(vip1), 14+4, HeartbeatVersion+1), ReasonDropMalformed},
		{"heartbeat cut before its VIP", heartbeatFrame(vip1)[:14+11], ReasonDropMalformed},
		{"heartbeat cut before its host ID", heartbeatFrame(vip1)[:14+12], ReasonDropMalformed},
		{"heartbeat header, VIP and host ID only", heartbeatFrame(vip1)[:14+13], ReasonPassHeartbeat},
		{"IPv4 header of 19 bytes", syn[:14+19], ReasonPassShort},
		{"IPv4 header only", withTotLen(syn[:14+20], 20), ReasonDropMalformed},
		{"TCP header of 19 bytes", withTotLen(syn[:14+20+19], 39), ReasonDropMalformed},
		{"whole SYN", syn, ReasonAcceptOwner},
		{"SYN with Ethernet padding", append(append([]byte(nil), syn...), make([]byte, 6)...), ReasonAcceptOwner},
		{"total length below the header", withTotLen(append([]byte(nil), syn...), 19), ReasonDropMalformed},
		{"total length cuts the TCP header", withTotLen(append([]byte(nil), syn...), 39), ReasonDropMalformed},
		{"total length exactly the headers", withTotLen(append([]byte(nil), syn...), 40), ReasonAcceptOwner},
		{"TCP data offset 4 (16 bytes)", withTCPOffset(syn, 4), ReasonDropMalformed},
		{"TCP data offset 5", withTCPOffset(syn, 5), ReasonAcceptOwner},
		{"TCP data offset past the segment", withTCPOffset(syn, 6), ReasonDropMalformed},
		{"UDP header of 7 bytes", withTotLen(udp(client, 1000, vip1, 53).Frame()[:14+20+7], 27), ReasonDropMalformed},
		{"UDP header of 8 bytes", withTotLen(udp(client, 1000, vip1, 53).Frame()[:14+20+8], 28), ReasonAcceptOwner},
		{"ICMP header of 7 bytes", withTotLen((&Packet{Src: client, Dst: vip1, Proto: ipProtoICMP, ICMPType: 8}).Frame()[:14+27], 27), ReasonDropMalformed},
		{"ICMP echo of 8 bytes", (&Packet{Src: client, Dst: vip1, Proto: ipProtoICMP, ICMPType: 8}).Frame(), ReasonAcceptOwner},
		{"IHL 4", withIHL(syn, 4), ReasonDropMalformed},
		{"IPv6 version nibble", withVersion(syn, 6), ReasonDropMalformed},
	}
	for _, c := range cases {
		if d := Decide(c.frame, s, nil); d.Reason != c.want {
			t.Errorf("%s: %v, want %v", c.name, d.Reason, c.want)
		}
	}
}

// TestHeartbeatWithoutVIPs: with no VIPs configured yet, a frame that
// opens like a heartbeat passes (there is no cluster VIP to compare).
func TestHeartbeatWithoutVIPs(t *testing.T) {
	s := &State{}
	if d := Decide(heartbeatFrame(vip1), s, nil); d.Reason != ReasonPassHeartbeat {
		t.Fatalf("%v", d.Reason)
	}
}

// TestManyVIPs: only the first MaxVIPs addresses are VIPs, as in the data
// plane's fixed array.
func TestManyVIPs(t *testing.T) {
	s := testState(MarkOwned)
	s.VIPs = nil
	for i := 0; i <= MaxVIPs; i++ {
		s.VIPs = append(s.VIPs, netip.AddrFrom4([4]byte{198, 18, 2, byte(i + 1)}))
	}
	last := s.VIPs[MaxVIPs-1]
	extra := s.VIPs[MaxVIPs]
	if d := Decide(tcp(client, 1000, last, 7, tcpFlagSYN).Frame(), s, nil); d.Reason == ReasonPassNotVIP {
		t.Errorf("VIP %d of %d is not treated as a VIP", MaxVIPs, MaxVIPs)
	}
	if d := Decide(tcp(client, 1000, extra, 7, tcpFlagSYN).Frame(), s, nil); d.Reason != ReasonPassNotVIP {
		t.Errorf("address %d past MaxVIPs decided %v, want %v", MaxVIPs+1, d.Reason, ReasonPassNotVIP)
	}
}

// TestManyRules: rules past MaxRules are never matched.
func TestManyRules(t *testing.T) {
	s := testState(MarkOwned)
	s.Rules = nil
	for i := 0; i <= MaxRules; i++ {
		s.Rules = append(s.Rules, PortRule{VIP: vip1, StartPort: uint16(1000 + i), EndPort: uint16(1000 + i), Protocol: ProtoTCP, Mode: ModeMultiple})
	}
	if d := Decide(tcp(client, 1, vip1, 1000+MaxRules-1, tcpFlagSYN).Frame(), s, nil); d.Rule != MaxRules-1 {
		t.Errorf("rule %d of %d not matched: %+v", MaxRules, MaxRules, d)
	}
	if d := Decide(tcp(client, 1, vip1, 1000+MaxRules, tcpFlagSYN).Frame(), s, nil); d.Rule != DefaultRule {
		t.Errorf("rule past MaxRules matched: %+v", d)
	}
}

// TestFrameBuilder: the frames the model's tests (and nlbctl filter) build
// are valid IPv4: the header checksum verifies, lengths are right.
func TestFrameBuilder(t *testing.T) {
	for _, p := range []*Packet{
		tcp(client, 1000, vip1, 80, tcpFlagSYN),
		udp(client, 1000, vip1, 53),
		{Src: client, Dst: vip1, Proto: ipProtoUDP, SPort: 1, DPort: 2, Payload: []byte{1, 2, 3}},
		{Src: client, Dst: vip1, Proto: ipProtoTCP, IPOptions: []byte{1, 1, 1}, TCPOptions: []byte{2, 4, 5, 0xb4}},
		{Src: client, Dst: vip1, Proto: ipProtoICMP, ICMPType: 3, Inner: udp(vip1, 53, client, 9)},
	} {
		f := p.Frame()
		ip := f[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ihl%4 != 0 || ihl < 20 || checksum(ip[:ihl]) != 0 {
			t.Errorf("%+v: header checksum does not verify", p)
		}
		if got := int(binary.BigEndian.Uint16(ip[2:4])); got != len(ip) {
			t.Errorf("%+v: total length %d, frame carries %d", p, got, len(ip))
		}
		if p.Proto == ipProtoUDP {
			if got := int(binary.BigEndian.Uint16(ip[ihl+4:])); got != 8+len(p.Payload) {
				t.Errorf("%+v: UDP length %d, want %d", p, got, 8+len(p.Payload))
			}
		}
	}
	// checksum of an odd-length buffer pads with a zero byte.
	if got, want := checksum([]byte{0x12, 0x34, 0x56}), ^uint16(0x1234+0x5600); got != want {
		t.Errorf("odd checksum %#x, want %#x", got, want)
	}
	// End-around carry.
	if got, want := checksum([]byte{0xff, 0xff, 0x00, 0x02}), ^uint16(0x0002); got != want {
		t.Errorf("carry checksum %#x, want %#x", got, want)
	}
}

// heartbeatFrame is a frame with the heartbeat ethertype that opens like
// a heartbeat of the cluster whose primary VIP is vip.
func heartbeatFrame(vip netip.Addr) []byte {
	f := make([]byte, 60)
	binary.BigEndian.PutUint16(f[12:14], EtherTypeHeartbeat)
	binary.BigEndian.PutUint32(f[14:18], HeartbeatMagic)
	f[18] = HeartbeatVersion
	copy(f[22:26], vip.AsSlice())
	return f
}

func withByte(f []byte, i int, v byte) []byte {
	f = append([]byte(nil), f...)
	f[i] = v
	return f
}

func withTotLen(f []byte, n int) []byte {
	f = append([]byte(nil), f...)
	binary.BigEndian.PutUint16(f[14+2:], uint16(n))
	return f
}

func withTCPOffset(f []byte, words uint8) []byte {
	f = append([]byte(nil), f...)
	f[14+20+12] = words << 4
	return f
}

func withIHL(f []byte, words uint8) []byte {
	f = append([]byte(nil), f...)
	f[14] = f[14]&0xf0 | words
	return f
}

func withVersion(f []byte, v uint8) []byte {
	f = append([]byte(nil), f...)
	f[14] = v<<4 | f[14]&0x0f
	return f
}

// TestICMPErrorQuotes: quotes at each length limit, and of protocols
// without ports.
func TestICMPErrorQuotes(t *testing.T) {
	s := testState(MarkOwned)
	router := netip.MustParseAddr("198.18.0.1")
	errFrame := func(inner *Packet, keep int) []byte {
		f := (&Packet{Src: router, Dst: vip1, Proto: ipProtoICMP, ICMPType: icmpDestUnreach, Inner: inner}).Frame()
		if keep >= 0 {
			f = f[:14+20+8+keep]
			binary.BigEndian.PutUint16(f[14+2:], uint16(20+8+keep))
		}
		return f
	}
	gre := &Packet{Src: vip1, Dst: client, Proto: 47}
	quotedUDP := udp(vip1, 53, client, 9)
	for _, c := range []struct {
		name string
		f    []byte
		want Reason
		rule int
	}{
		{"quote of a portless protocol", errFrame(gre, -1), ReasonAcceptOwner, DefaultRule},
		{"quote of a bare 20-byte header, portless", errFrame(gre, 20), ReasonAcceptOwner, DefaultRule},
		{"quote of 19 bytes", errFrame(gre, 19), ReasonDropMalformed, -1},
		{"UDP quote with its 8-byte header", errFrame(quotedUDP, 28), ReasonAcceptOwner, -2},
		{"UDP quote with 4 bytes of it", errFrame(quotedUDP, 24), ReasonDropMalformed, -1},
		{"UDP quote with 7 bytes of it", errFrame(quotedUDP, 27), ReasonDropMalformed, -1},
	} {
		d := Decide(c.f, s, nil)
		if d.Reason != c.want || c.rule != -2 && d.Rule != c.rule {
			t.Errorf("%s: %+v, want %v rule %d", c.name, d, c.want, c.rule)
		}
	}
}

// TestRuleBeyondMax: a rule at index MaxRules (one too many) is never
// consulted, even when it would decide otherwise than the default rule.
func TestRuleBeyondMax(t *testing.T) {
	s := testState(MarkOwned)
	s.Rules = nil
	for i := 0; i < MaxRules; i++ {
		s.Rules = append(s.Rules, PortRule{VIP: vip1, StartPort: uint16(1000 + i), EndPort: uint16(1000 + i), Protocol: ProtoTCP, Mode: ModeMultiple})
	}
	s.Rules = append(s.Rules, PortRule{VIP: vip1, StartPort: 5000, EndPort: 5000, Protocol: ProtoTCP, Mode: ModeDisabled})
	if d := Decide(tcp(client, 1, vip1, 5000, tcpFlagSYN).Frame(), s, nil); d.Reason != ReasonAcceptOwner || d.Rule != DefaultRule {
		t.Errorf("a rule past MaxRules was consulted: %+v", d)
	}
}

// TestStringsAndCounts: names of values out of range, and table counts.
func TestStringsAndCounts(t *testing.T) {
	if got := Reason(NumReasons).String(); got != "reason(16)" {
		t.Errorf("out-of-range reason prints %q", got)
	}
	if got := Reason(NumReasons - 1).String(); got == "" || got[:6] == "reason" {
		t.Errorf("last reason prints %q", got)
	}
	var tab Table
	for b := range tab {
		tab[b] = uint8(b%3 + 1)
	}
	tab[0], tab[1] = 0, MaxHostID
	c := tab.Counts()
	if c[0] != 1 || c[MaxHostID] != 1 || c[1]+c[2]+c[3] != Buckets-2 || c[1] < Buckets/3-2 {
		t.Errorf("counts %v", c[:4])
	}
}

// TestFragmentsFollowRules: a first fragment to a disabled rule's port is
// dropped on every host (no host can reassemble the datagram); the other
// fragments, and datagrams to enabled rules, are taken by exactly one
// host, even when the VIP's first rule for the protocol is disabled.
func TestFragmentsFollowRules(t *testing.T) {
	rules := []PortRule{
		{VIP: vip1, StartPort: 53, EndPort: 53, Protocol: ProtoUDP, Mode: ModeDisabled, Affinity: AffinityNone},
		{VIP: vip1, StartPort: 80, EndPort: 80, Protocol: ProtoBoth, Mode: ModeMultiple, Affinity: AffinityNone},
		{StartPort: 443, EndPort: 443, Protocol: ProtoTCP, Mode: ModeDisabled, Affinity: AffinityNone},
	}
	SortRules(rules)
	// Three hosts; host h owns the buckets b with b%3 == h in every table.
	hosts := make([]*State, 3)
	for h := range hosts {
		s := &State{VIPs: []netip.Addr{vip1}, Rules: rules, Seed: Seed{5}, LeaseValid: true}
		hosts[h] = s
		for t := range s.Marks {
			var m Marks
			for b := range m {
				if b%3 == h {
					m[b] = MarkOwned
				}
			}
			s.Marks[t] = &m
		}
	}
	takers := func(f []byte) (n int, reasons []Reason) {
		for _, s := range hosts {
			d := Decide(f, s, nil)
			if d.Verdict == Accept {
				n++
			}
			reasons = append(reasons, d.Reason)
		}
		return
	}
	frags := func(proto uint8, dport uint16) (first, rest []byte) {
		p := &Packet{Src: client, Dst: vip1, Proto: proto, SPort: 4000, DPort: dport, MoreFragments: true, Payload: make([]byte, 32)}
		if proto == ipProtoTCP {
			p.TCPFlags = tcpFlagSYN
		}
		q := &Packet{Src: client, Dst: vip1, Proto: proto, FragOffset: 5, Payload: make([]byte, 16)}
		return p.Frame(), q.Frame()
	}
	for _, c := range []struct {
		name     string
		proto    uint8
		port     uint16
		disabled bool
	}{
		{"udp to a disabled port", ipProtoUDP, 53, true},
		{"tcp to an all-VIP disabled port", ipProtoTCP, 443, true},
		{"udp to an enabled port behind a disabled first rule", ipProtoUDP, 80, false},
		{"tcp to an enabled port", ipProtoTCP, 80, false},
		{"udp to no rule", ipProtoUDP, 9999, false},
	} {
		first, rest := frags(c.proto, c.port)
		n, reasons := takers(first)
		if c.disabled {
			for _, r := range reasons {
				if r != ReasonDropRuleDisabled {
					t.Errorf("%s: first fragment decided %v, want %v", c.name, reasons, ReasonDropRuleDisabled)
					break
				}
			}
		} else if n != 1 {
			t.Errorf("%s: first fragment taken by %d hosts (%v)", c.name, n, reasons)
		}
		if n, reasons := takers(rest); n != 1 {
			t.Errorf("%s: later fragment taken by %d hosts (%v)", c.name, n, reasons)
		}
	}
	// A first fragment that carries just the four bytes of ports is still
	// decided by its port.
	first, _ := frags(ipProtoUDP, 53)
	first = withTotLen(first[:14+20+4], 24)
	if _, reasons := takers(first); reasons[0] != ReasonDropRuleDisabled {
		t.Errorf("first fragment with 4 bytes of UDP header to a disabled port: %v", reasons)
	}
}
