package macmode

import (
	"net"
	"net/netip"
	"testing"

	"github.com/mdlayher/ndp"
)

func TestAnswerNS(t *testing.T) {
	vip := netip.MustParseAddr("2001:2::100")
	vips := map[netip.Addr]bool{vip: true}
	mac := net.HardwareAddr{0x03, 0xbf, 0xc6, 0x12, 0, 0x64}
	client := netip.MustParseAddr("fe80::1")
	ns := func(target netip.Addr) ndp.Message { return &ndp.NeighborSolicitation{TargetAddress: target} }
	for _, tt := range []struct {
		name      string
		m         ndp.Message
		src       netip.Addr
		want      Verdict
		dst       netip.Addr
		solicited bool
	}{
		{"a solicitation for the VIP", ns(vip), client, Answer, client, true},
		{"duplicate address detection: to all nodes, unsolicited", ns(vip), netip.IPv6Unspecified(), Answer, allNodes, false},
		{"another target", ns(netip.MustParseAddr("2001:2::1")), client, Ignore, netip.Addr{}, false},
		{"from the VIP itself", ns(vip), vip, Ignore, netip.Addr{}, false},
		{"not a solicitation", &ndp.RouterSolicitation{}, client, Ignore, netip.Addr{}, false},
	} {
		v, na, dst := answerNS(tt.m, tt.src, vips, mac)
		if v != tt.want || dst != tt.dst {
			t.Errorf("%s: %v to %v, want %v to %v", tt.name, v, dst, tt.want, tt.dst)
			continue
		}
		if v != Answer {
			continue
		}
		if na.TargetAddress != vip || na.Solicited != tt.solicited || !na.Override || na.Router {
			t.Errorf("%s: advertisement %+v", tt.name, na)
		}
		if len(na.Options) != 1 || na.Options[0].(*ndp.LinkLayerAddress).Addr.String() != mac.String() ||
			na.Options[0].(*ndp.LinkLayerAddress).Direction != ndp.Target {
			t.Errorf("%s: options %+v, want the target link-layer address %s", tt.name, na.Options, mac)
		}
	}
}
