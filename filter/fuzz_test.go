package filter

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/nlbproject/nlb/internal/framegen"
)

// FuzzDecide: the model never panics on arbitrary frames, its verdict
// always follows from its reason, and rule and bucket are in range.
func FuzzDecide(f *testing.F) {
	s := testState(MarkDirty)
	f.Add(tcp(client, 1000, vip1, 80, tcpFlagSYN).Frame())
	f.Add(udp(client, 1000, vip1, 53).Frame())
	f.Add((&Packet{Src: netip.MustParseAddr("198.18.0.1"), Dst: vip1, Proto: 1, ICMPType: 3, Inner: tcp(vip1, 80, client, 40000, tcpFlagACK)}).Frame())
	f.Add([]byte{0, 1, 2})
	// Seeds from gopacket, an independent builder: options, VLAN tags,
	// fragments, both protocols.
	r := rand.New(rand.NewPCG(9, 9))
	for i := 0; i < 16; i++ {
		f.Add(framegen.Frame(r, client, uint16(1024+i), vip1, 80))
	}
	holds := func(c, v netip.AddrPort) bool { return c.Port()%2 == 0 }
	f.Fuzz(func(t *testing.T, frame []byte) {
		d := Decide(frame, s, holds)
		if d.Verdict != d.Reason.Verdict() || d.Reason == ReasonInvalid {
			t.Fatalf("decision %+v", d)
		}
		if d.Rule < -1 || d.Rule > DefaultRule || d.Bucket < -1 || d.Bucket >= Buckets {
			t.Fatalf("decision out of range: %+v", d)
		}
	})
}
