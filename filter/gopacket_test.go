package filter

import (
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/nlbproject/nlb/internal/framegen"
)

// TestParseMatchesGopacket: on frames built by gopacket (options, VLAN
// tags, fragments, both protocols), the model reads the same client
// address and port as gopacket's decoder: its bucket is the hash of what
// gopacket decoded (port 0 for fragments), and a VLAN-tagged frame is not
// read as IPv4.
func TestParseMatchesGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	vip := netip.MustParseAddr("198.18.0.100")
	s := &State{VIPs: []netip.Addr{vip}, LeaseValid: true,
		Rules: []PortRule{{StartPort: 0, EndPort: 65535, Protocol: ProtoBoth, Mode: ModeMultiple, Affinity: AffinityNone}}}
	for i := range s.Seed {
		s.Seed[i] = byte(r.Uint32())
	}
	var owned Marks
	for b := range owned {
		owned[b] = MarkOwned
	}
	s.Marks[0] = &owned
	counts := map[string]int{}
	for i := 0; i < 20000; i++ {
		client := netip.AddrFrom4([4]byte{198, 19, byte(r.IntN(256)), byte(r.IntN(256))})
		frame := framegen.Frame(r, client, uint16(r.IntN(65536)), vip, uint16(r.IntN(65536)))
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		d := Decide(frame, s, nil)
		if p.Layer(layers.LayerTypeDot1Q) != nil {
			counts["vlan"]++
			if d.Reason != ReasonPassNotIP {
				t.Fatalf("VLAN-tagged frame decided %v", d.Reason)
			}
			continue
		}
		ip := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		src := netip.AddrFrom4([4]byte(ip.SrcIP.To4()))
		var port uint16
		frag := ip.Flags&layers.IPv4MoreFragments != 0 || ip.FragOffset != 0
		switch l := p.TransportLayer().(type) {
		case *layers.TCP:
			port = uint16(l.SrcPort)
		case *layers.UDP:
			port = uint16(l.SrcPort)
		}
		if frag {
			port = 0
			counts["fragment"]++
		} else {
			counts[p.TransportLayer().LayerType().String()]++
		}
		if d.Reason != ReasonAcceptOwner {
			t.Fatalf("frame %d (%v): %v, want accepted", i, p, d.Reason)
		}
		if want := int(Bucket(s.Seed, src, port, AffinityNone)); d.Bucket != want {
			t.Fatalf("frame %d: bucket %d, gopacket's fields (%s, %d) hash to %d\n%v", i, d.Bucket, src, port, want, p)
		}
	}
	t.Logf("%v", counts)
	for _, k := range []string{"vlan", "fragment", "TCP", "UDP"} {
		if counts[k] == 0 {
			t.Errorf("no %s frame generated", k)
		}
	}
}
