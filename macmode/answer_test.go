package macmode

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

var (
	fuzzVIP  = netip.MustParseAddr("198.18.0.100")
	fuzzMAC  = net.HardwareAddr{0x03, 0xbf, 198, 18, 0, 100}
	fuzzVIPs = map[netip.Addr]bool{fuzzVIP: true}
)

func arpFrame(t testing.TB, op arp.Operation, senderIP, targetIP netip.Addr) []byte {
	t.Helper()
	client := net.HardwareAddr{0x02, 0, 0, 0, 0, 0xc8}
	p, err := arp.NewPacket(op, client, senderIP, net.HardwareAddr{0, 0, 0, 0, 0, 0}, targetIP)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := p.MarshalBinary()
	fb, _ := (&ethernet.Frame{Destination: bcast, Source: client, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	return fb
}

func TestAnswer(t *testing.T) {
	client := netip.MustParseAddr("198.18.0.200")
	for _, tc := range []struct {
		name  string
		frame []byte
		want  Verdict
	}{
		{"request for the VIP", arpFrame(t, arp.OperationRequest, client, fuzzVIP), Answer},
		{"request for another address", arpFrame(t, arp.OperationRequest, client, netip.MustParseAddr("198.18.0.1")), Ignore},
		{"a reply", arpFrame(t, arp.OperationReply, client, fuzzVIP), Ignore},
		{"gratuitous", arpFrame(t, arp.OperationRequest, fuzzVIP, fuzzVIP), Ignore},
		{"truncated", arpFrame(t, arp.OperationRequest, client, fuzzVIP)[:30], Malformed},
		{"empty", nil, Malformed},
	} {
		v, reply := answer(tc.frame, fuzzVIPs, fuzzMAC)
		if v != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, v, tc.want)
		}
		if v == Answer && (reply.SenderIP != fuzzVIP || reply.SenderHardwareAddr.String() != fuzzMAC.String() || reply.TargetIP != client) {
			t.Errorf("%s: reply %+v", tc.name, reply)
		}
	}
}

// FuzzAnswer: any frame off the wire is answered, ignored or counted as
// malformed, never a crash; an answer always announces a VIP at the
// cluster MAC, to the requester.
func FuzzAnswer(f *testing.F) {
	client := netip.MustParseAddr("198.18.0.200")
	f.Add(arpFrame(f, arp.OperationRequest, client, fuzzVIP))
	f.Add(arpFrame(f, arp.OperationReply, client, fuzzVIP))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, reply := answer(b, fuzzVIPs, fuzzMAC)
		if v != Answer {
			if reply != nil {
				t.Fatal("a reply without an answer")
			}
			return
		}
		if !fuzzVIPs[reply.SenderIP] || reply.SenderHardwareAddr.String() != fuzzMAC.String() || reply.Operation != arp.OperationReply {
			t.Fatalf("reply %+v", reply)
		}
	})
}
