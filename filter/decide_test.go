package filter

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

var (
	vip1   = netip.MustParseAddr("198.18.0.10")
	vip2   = netip.MustParseAddr("198.18.0.11")
	client = netip.MustParseAddr("198.19.1.20")
	other  = netip.MustParseAddr("198.18.0.99")
)

// testState: rule 0 = vip1:80/tcp multiple, rule 1 = vip1:53/udp single,
// rule 2 = all:80-90/both multiple affinity single, rule 3 = all:443/tcp
// disabled. Marks default to owned on every rule so tests set what they
// need.
func testState(mark Mark) *State {
	s := &State{
		VIPs: []netip.Addr{vip1, vip2},
		Rules: []PortRule{
			{VIP: vip1, StartPort: 80, EndPort: 80, Protocol: ProtoTCP, Mode: ModeMultiple, Affinity: AffinityNone},
			{VIP: vip1, StartPort: 53, EndPort: 53, Protocol: ProtoUDP, Mode: ModeSingle, Affinity: AffinityNone},
			{StartPort: 80, EndPort: 90, Protocol: ProtoBoth, Mode: ModeMultiple, Affinity: AffinitySingle},
			{StartPort: 443, EndPort: 443, Protocol: ProtoTCP, Mode: ModeDisabled, Affinity: AffinityNone},
		},
		Seed:       Seed{7, 7, 7},
		RemotePort: 2504,
		LeaseValid: true,
	}
	SortRules(s.Rules)
	for i := range s.Marks {
		var m Marks
		for b := range m {
			m[b] = mark
		}
		s.Marks[i] = &m
	}
	return s
}

func tcp(src netip.Addr, sport uint16, dst netip.Addr, dport uint16, flags uint8) *Packet {
	return &Packet{Src: src, Dst: dst, Proto: ipProtoTCP, SPort: sport, DPort: dport, TCPFlags: flags}
}

func udp(src netip.Addr, sport uint16, dst netip.Addr, dport uint16) *Packet {
	return &Packet{Src: src, Dst: dst, Proto: ipProtoUDP, SPort: sport, DPort: dport}
}

func TestSortRules(t *testing.T) {
	s := testState(MarkOwned)
	want := []string{"198.18.0.10:53/udp", "198.18.0.10:80/tcp", "all:80-90/both", "all:443/tcp"}
	for i, r := range s.Rules {
		if r.String() != want[i] {
			t.Fatalf("rule %d = %s, want %s", i, r, want[i])
		}
	}
	// VIPs in address order, then ports, then protocol (tcp before udp),
	// whatever the input order.
	rules := []PortRule{
		{StartPort: 80, EndPort: 80, Protocol: ProtoUDP},
		{VIP: vip2, StartPort: 80, EndPort: 80, Protocol: ProtoUDP},
		{StartPort: 80, EndPort: 80, Protocol: ProtoTCP},
		{VIP: vip2, StartPort: 80, EndPort: 80, Protocol: ProtoTCP},
		{VIP: vip1, StartPort: 81, EndPort: 81, Protocol: ProtoTCP},
	}
	want = []string{"198.18.0.10:81/tcp", "198.18.0.11:80/tcp", "198.18.0.11:80/udp", "all:80/tcp", "all:80/udp"}
	for _, perm := range [][]int{{0, 1, 2, 3, 4}, {4, 3, 2, 1, 0}, {2, 0, 4, 1, 3}} {
		in := make([]PortRule, len(rules))
		for i, j := range perm {
			in[i] = rules[j]
		}
		SortRules(in)
		for i, r := range in {
			if r.String() != want[i] {
				t.Fatalf("order %v: rule %d = %s, want %s", perm, i, r, want[i])
			}
		}
	}
}

func TestDecideClasses(t *testing.T) {
	holdsNone := func(netip.AddrPort, netip.AddrPort) bool { return false }
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	hb := heartbeatFrame(vip1)
	v6 := make([]byte, 60)
	v6[12], v6[13] = 0x86, 0xdd
	vlan := make([]byte, 60)
	vlan[12], vlan[13] = 0x81, 0x00
	short := tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame()[:30]

	withOpts := tcp(client, 1000, vip1, 80, tcpFlagSYN)
	withOpts.IPOptions = []byte{0x94, 0x04, 0, 0} // router alert
	withOpts.TCPOptions = []byte{2, 4, 5, 0xb4}   // MSS

	badIHL := tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame()
	badIHL[14] = 0x44
	truncTCP := tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame()[:14+20+12]
	badDoff := tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame()
	badDoff[14+20+12] = 0x40 // doff 4 < 5
	truncUDP := udp(client, 1000, vip1, 53).Frame()[:14+20+6]

	// tot_len shorter than the frame (Ethernet padding) and shorter than
	// the TCP header it claims.
	lenLies := tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame()
	lenLies[16], lenLies[17] = 0, 30

	tests := []struct {
		name  string
		frame []byte
		want  Reason
	}{
		{"runt", []byte{1, 2, 3}, ReasonPassNotIP},
		{"arp", arp, ReasonPassARP},
		{"heartbeat", hb, ReasonPassHeartbeat},
		{"ipv6 not to a VIP", v6, ReasonPassNotVIP},
		{"vlan", vlan, ReasonPassNotIP},
		{"short ipv4", short, ReasonPassShort},
		{"not vip", tcp(client, 1000, other, 80, tcpFlagSYN).Frame(), ReasonPassNotVIP},
		{"remote control to vip", udp(client, 1000, vip1, 2504).Frame(), ReasonPassRemoteControl},
		{"remote control to vip2", udp(client, 1000, vip2, 2504).Frame(), ReasonPassRemoteControl},
		{"tcp owned", tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame(), ReasonAcceptOwner},
		{"ip and tcp options", withOpts.Frame(), ReasonAcceptOwner},
		{"bad ihl", badIHL, ReasonDropMalformed},
		{"truncated tcp", truncTCP, ReasonDropMalformed},
		{"tcp doff < 5", badDoff, ReasonDropMalformed},
		{"truncated udp", truncUDP, ReasonDropMalformed},
		{"tot_len lies", lenLies, ReasonDropMalformed},
		{"disabled rule", tcp(client, 1000, vip2, 443, tcpFlagSYN).Frame(), ReasonDropRuleDisabled},
		{"no rule: default", tcp(client, 1000, vip2, 22, tcpFlagSYN).Frame(), ReasonAcceptOwner},
		{"gre to vip: default", (&Packet{Src: client, Dst: vip1, Proto: 47}).Frame(), ReasonAcceptOwner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.frame, testState(MarkOwned), holdsNone)
			if d.Reason != tt.want {
				t.Fatalf("reason = %v, want %v (decision %+v)", d.Reason, tt.want, d)
			}
			if d.Verdict != tt.want.Verdict() {
				t.Fatalf("verdict %v does not follow from reason %v", d.Verdict, d.Reason)
			}
		})
	}
}

func TestRuleMatchPrecedence(t *testing.T) {
	s := testState(MarkOwned)
	idx := func(name string) int {
		for i, r := range s.Rules {
			if r.String() == name {
				return i
			}
		}
		t.Fatalf("no rule %s", name)
		return -1
	}
	tests := []struct {
		p    *Packet
		rule int
	}{
		{tcp(client, 1, vip1, 80, tcpFlagSYN), idx("198.18.0.10:80/tcp")}, // specific beats all
		{tcp(client, 1, vip2, 80, tcpFlagSYN), idx("all:80-90/both")},
		{udp(client, 1, vip1, 80), idx("all:80-90/both")}, // specific rule is tcp only
		{tcp(client, 1, vip1, 90, tcpFlagSYN), idx("all:80-90/both")},
		{tcp(client, 1, vip1, 91, tcpFlagSYN), DefaultRule},
		{tcp(client, 1, vip1, 79, tcpFlagSYN), DefaultRule},
		{udp(client, 1, vip1, 53), idx("198.18.0.10:53/udp")},
		{udp(client, 1, vip2, 53), DefaultRule},
	}
	for _, tt := range tests {
		if d := Decide(tt.p.Frame(), s, nil); d.Rule != tt.rule {
			t.Errorf("%v:%d proto %d: rule %d, want %d", tt.p.Dst, tt.p.DPort, tt.p.Proto, d.Rule, tt.rule)
		}
	}
}

func TestAffinity(t *testing.T) {
	s := testState(MarkOwned)
	// all:80-90/both has affinity single: every port of a client, same bucket.
	first := Decide(tcp(client, 1000, vip2, 85, tcpFlagSYN).Frame(), s, nil).Bucket
	for p := uint16(1001); p < 1100; p++ {
		if b := Decide(tcp(client, p, vip2, 85, tcpFlagSYN).Frame(), s, nil).Bucket; b != first {
			t.Fatalf("affinity single: port %d in bucket %d, port 1000 in %d", p, b, first)
		}
	}
	// vip1:80/tcp has affinity none: ports spread.
	seen := map[int]bool{}
	for p := uint16(1000); p < 1100; p++ {
		seen[Decide(tcp(client, p, vip1, 80, tcpFlagSYN).Frame(), s, nil).Bucket] = true
	}
	if len(seen) < 90 {
		t.Fatalf("affinity none: 100 ports used only %d buckets", len(seen))
	}
	// network affinity: a /24 shares a bucket, and only a /24: the /24s
	// of one /16 spread over buckets (a wider mask would put them in one).
	n1 := Bucket(s.Seed, netip.MustParseAddr("198.19.7.1"), 5, AffinityNetwork)
	n2 := Bucket(s.Seed, netip.MustParseAddr("198.19.7.254"), 9, AffinityNetwork)
	if n1 != n2 {
		t.Fatalf("network affinity: %d != %d", n1, n2)
	}
	nets := map[uint16]bool{}
	for third := range 100 {
		nets[Bucket(s.Seed, netip.AddrFrom4([4]byte{198, 19, byte(third), 1}), 5, AffinityNetwork)] = true
	}
	if len(nets) < 90 {
		t.Fatalf("network affinity: 100 /24s of one /16 used only %d buckets", len(nets))
	}
}

func TestFragmentsDecideAlike(t *testing.T) {
	for _, mark := range []Mark{MarkOwned, MarkNone, MarkDirty, MarkRetained} {
		s := testState(MarkNone)
		// make the client's port-0 bucket carry mark for every rule
		b := Bucket(s.Seed, client, 0, AffinityNone)
		for i := range s.Marks {
			s.Marks[i][b] = mark
		}
		first := udp(client, 5000, vip1, 53)
		first.MoreFragments = true
		first.Payload = make([]byte, 64)
		middle := &Packet{Src: client, Dst: vip1, Proto: ipProtoUDP, FragOffset: 9, MoreFragments: true, Payload: make([]byte, 64)}
		last := &Packet{Src: client, Dst: vip1, Proto: ipProtoUDP, FragOffset: 18, Payload: make([]byte, 10)}
		d0 := Decide(first.Frame(), s, nil)
		for _, p := range []*Packet{middle, last} {
			if d := Decide(p.Frame(), s, nil); d != d0 {
				t.Fatalf("mark %v: fragment decided %+v, first fragment %+v", mark, d, d0)
			}
		}
		if d0.Bucket != int(b) {
			t.Fatalf("fragment bucket %d, want client-address bucket %d", d0.Bucket, b)
		}
		if wantAccept := mark == MarkOwned || mark == MarkDirty; (d0.Verdict == Accept) != wantAccept {
			t.Fatalf("mark %v: fragment verdict %v", mark, d0.Verdict)
		}
	}
}

func TestICMPErrorFollowsFlow(t *testing.T) {
	s := testState(MarkNone)
	// The flow client:40000 -> vip1:80; the error quotes vip1:80 -> client:40000.
	b := Bucket(s.Seed, client, 40000, AffinityNone)
	for i, r := range s.Rules {
		if r.String() == "198.18.0.10:80/tcp" {
			s.Marks[i][b] = MarkOwned
		}
	}
	router := netip.MustParseAddr("198.18.0.1")
	inner := tcp(vip1, 80, client, 40000, tcpFlagACK)
	icmp := &Packet{Src: router, Dst: vip1, Proto: ipProtoICMP, ICMPType: icmpDestUnreach, ICMPCode: 4, Inner: inner}
	d := Decide(icmp.Frame(), s, nil)
	flow := Decide(tcp(client, 40000, vip1, 80, tcpFlagACK).Frame(), s, nil)
	if d.Reason != ReasonAcceptOwner || d.Rule != flow.Rule || d.Bucket != flow.Bucket {
		t.Fatalf("icmp error decided %+v, flow %+v", d, flow)
	}
	// Every ICMP error type quotes the flow it is about: destination
	// unreachable, time exceeded and parameter problem alike.
	for _, typ := range []uint8{icmpDestUnreach, icmpTimeExceeded, icmpParamProblem} {
		e := &Packet{Src: router, Dst: vip1, Proto: ipProtoICMP, ICMPType: typ, Inner: inner}
		if d := Decide(e.Frame(), s, nil); d.Reason != ReasonAcceptOwner || d.Rule != flow.Rule || d.Bucket != flow.Bucket {
			t.Errorf("icmp type %d error decided %+v, flow %+v", typ, d, flow)
		}
	}
	// A quote of a non-first fragment carries no ports: it names no flow.
	frag := tcp(vip1, 80, client, 40000, tcpFlagACK)
	frag.FragOffset = 3
	if d := Decide((&Packet{Src: router, Dst: vip1, Proto: ipProtoICMP, ICMPType: icmpTimeExceeded, Inner: frag}).Frame(), s, nil); d.Reason != ReasonDropMalformed {
		t.Errorf("icmp error quoting a non-first fragment: %v, want %v", d.Reason, ReasonDropMalformed)
	}
	// Quoting a packet from another source is forged.
	forged := &Packet{Src: router, Dst: vip1, Proto: ipProtoICMP, ICMPType: icmpDestUnreach, Inner: tcp(other, 80, client, 40000, tcpFlagACK)}
	if d := Decide(forged.Frame(), s, nil); d.Reason != ReasonDropMalformed {
		t.Fatalf("forged icmp error: %v", d.Reason)
	}
	// Truncated quote.
	trunc := icmp.Frame()
	trunc = trunc[:len(trunc)-len(inner.ipv4())+10]
	trunc[16], trunc[17] = 0, byte(len(trunc)-14)
	if d := Decide(trunc, s, nil); d.Reason != ReasonDropMalformed {
		t.Fatalf("truncated icmp error: %v", d.Reason)
	}
	// In a retained bucket the error reaches the host holding the flow.
	for i := range s.Marks {
		s.Marks[i][b] = MarkRetained
	}
	holds := func(c, v netip.AddrPort) bool {
		return c == netip.AddrPortFrom(client, 40000) && v == netip.AddrPortFrom(vip1, 80)
	}
	if d := Decide(icmp.Frame(), s, holds); d.Reason != ReasonAcceptHeldFlow {
		t.Fatalf("icmp error in retained bucket with held flow: %v", d.Reason)
	}
}

func TestEchoOneHost(t *testing.T) {
	echo := (&Packet{Src: client, Dst: vip1, Proto: ipProtoICMP, ICMPType: icmpEchoRequest, SPort: 77}).Frame()
	accepted := 0
	for host := uint8(1); host <= 3; host++ {
		s := testState(MarkNone)
		s.Marks[DefaultRule] = Uniform(2).MarksFor(host)
		if Decide(echo, s, nil).Verdict == Accept {
			accepted++
		}
	}
	if accepted != 1 {
		t.Fatalf("echo accepted by %d hosts, want 1", accepted)
	}
}

func TestHandoffMarks(t *testing.T) {
	flow := netip.AddrPortFrom(client, 1000)
	held := func(c, v netip.AddrPort) bool { return c == flow }
	notHeld := func(netip.AddrPort, netip.AddrPort) bool { return false }
	syn := tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame()
	synack := tcp(client, 1000, vip1, 80, tcpFlagSYN|tcpFlagACK).Frame()
	ack := tcp(client, 1000, vip1, 80, tcpFlagACK).Frame()
	rst := tcp(client, 1000, vip1, 80, 0x04).Frame()
	dgram := udp(client, 1000, vip1, 81).Frame() // all:80-90/both
	type row struct {
		mark  Mark
		lease bool
		frame []byte
		holds HoldsFunc
		want  Reason
	}
	rows := []row{
		{MarkOwned, true, syn, notHeld, ReasonAcceptOwner},
		{MarkOwned, true, ack, notHeld, ReasonAcceptOwner},
		{MarkNone, true, ack, held, ReasonDropNotOwner}, // never looks up
		{MarkDirty, true, syn, notHeld, ReasonAcceptOwner},
		{MarkDirty, true, ack, held, ReasonAcceptHeldFlow},
		{MarkDirty, true, ack, notHeld, ReasonDropDirtyNonSYN},
		{MarkDirty, true, rst, notHeld, ReasonDropDirtyNonSYN},
		{MarkDirty, true, synack, notHeld, ReasonDropDirtyNonSYN},
		{MarkRetained, true, syn, held, ReasonDropNotOwner},
		{MarkRetained, true, ack, held, ReasonAcceptHeldFlow},
		{MarkRetained, true, ack, notHeld, ReasonDropNotOwner},
		{MarkRetained, true, dgram, held, ReasonDropNotOwner}, // UDP moves with its bucket
		{MarkDirty, true, dgram, notHeld, ReasonAcceptOwner},
		{MarkOwned, false, syn, notHeld, ReasonDropLeaseExpired},
		{MarkOwned, false, ack, held, ReasonAcceptHeldFlow},
		{MarkOwned, false, ack, notHeld, ReasonDropLeaseExpired},
		{MarkDirty, false, syn, notHeld, ReasonDropLeaseExpired},
		{MarkOwned, false, dgram, notHeld, ReasonDropLeaseExpired},
		{MarkRetained, false, ack, held, ReasonAcceptHeldFlow},
	}
	for _, r := range rows {
		s := testState(r.mark)
		s.LeaseValid = r.lease
		if d := Decide(r.frame, s, r.holds); d.Reason != r.want {
			t.Errorf("mark %v lease %v flags %#x: %v, want %v", r.mark, r.lease, r.frame[14+20+13], d.Reason, r.want)
		}
	}
}

func TestOverlap(t *testing.T) {
	a := PortRule{VIP: vip1, StartPort: 80, EndPort: 90, Protocol: ProtoTCP}
	tests := []struct {
		b    PortRule
		want bool
	}{
		{PortRule{VIP: vip1, StartPort: 90, EndPort: 100, Protocol: ProtoBoth}, true},
		{PortRule{VIP: vip1, StartPort: 91, EndPort: 100, Protocol: ProtoTCP}, false},
		{PortRule{VIP: vip1, StartPort: 70, EndPort: 80, Protocol: ProtoTCP}, true}, // touches a's start
		{PortRule{VIP: vip1, StartPort: 70, EndPort: 79, Protocol: ProtoTCP}, false},
		{PortRule{VIP: vip1, StartPort: 80, EndPort: 80, Protocol: ProtoUDP}, false},
		{PortRule{VIP: vip2, StartPort: 80, EndPort: 80, Protocol: ProtoTCP}, false},
		{PortRule{StartPort: 80, EndPort: 80, Protocol: ProtoTCP}, false}, // all-VIP: specific wins
	}
	for _, tt := range tests {
		if got := Overlap(a, tt.b); got != tt.want {
			t.Errorf("Overlap(%v, %v) = %v", a, tt.b, got)
		}
	}
}

// TestFlowMatchesDecide: Flow names the table and bucket Decide consults,
// for every rule kind, affinity and the default rule.
func TestFlowMatchesDecide(t *testing.T) {
	s := testState(MarkOwned)
	r := rand.New(rand.NewPCG(3, 4))
	ports := []uint16{80, 53, 85, 443, 8080, 2504}
	for i := range 5000 {
		client := netip.AddrFrom4([4]byte{198, 18, byte(r.IntN(4)), byte(r.IntN(256))})
		cport := uint16(1024 + r.IntN(60000))
		vip := []netip.Addr{vip1, vip2, netip.MustParseAddr("198.18.9.9")}[r.IntN(3)]
		dport := ports[r.IntN(len(ports))]
		p := tcp(client, cport, vip, dport, tcpFlagSYN)
		if i%2 == 1 {
			p = udp(client, cport, vip, dport)
		}
		d := Decide(p.Frame(), s, nil)
		table, bucket, ok := s.Flow(netip.AddrPortFrom(client, cport), netip.AddrPortFrom(vip, dport), p.Proto)
		if want := d.Bucket >= 0; ok != want {
			t.Fatalf("%v: Flow ok=%v, Decide %+v", p, ok, d)
		}
		if ok && (table != d.Rule || bucket != d.Bucket) {
			t.Fatalf("%v: Flow (%d, %d), Decide (%d, %d)", p, table, bucket, d.Rule, d.Bucket)
		}
	}
}
