package macmode

import (
	"net"
	"net/netip"
	"testing"
)

// TestDerivation checks the addresses against the forms Microsoft documents
// for NLB (cluster IP 192.168.1.100 gives 02-BF-C0-A8-01-64, 03-BF-C0-A8-01-64
// and, for IGMP, 01-00-5E-7F-01-64 with group 239.255.1.100), and the
// per-host masked source 02-h-W-X-Y-Z.
func TestDerivation(t *testing.T) {
	tests := []struct {
		vip                          string
		id                           uint8
		unicast, masked, mcast, igmp string
		group                        string
	}{
		{"192.168.1.100", 1, "02:bf:c0:a8:01:64", "02:01:c0:a8:01:64", "03:bf:c0:a8:01:64", "01:00:5e:7f:01:64", "239.255.1.100"},
		{"198.18.0.100", 3, "02:bf:c6:12:00:64", "02:03:c6:12:00:64", "03:bf:c6:12:00:64", "01:00:5e:7f:00:64", "239.255.0.100"},
		{"10.0.255.1", 64, "02:bf:0a:00:ff:01", "02:40:0a:00:ff:01", "03:bf:0a:00:ff:01", "01:00:5e:7f:ff:01", "239.255.255.1"},
	}
	for _, tt := range tests {
		vip := netip.MustParseAddr(tt.vip)
		check := func(name string, got net.HardwareAddr, err error, want string) {
			t.Helper()
			if err != nil || got.String() != want {
				t.Errorf("%s(%s) = %v, %v; want %s", name, tt.vip, got, err, want)
			}
		}
		u, err := UnicastMAC(vip)
		check("UnicastMAC", u, err, tt.unicast)
		m, err := MaskedMAC(vip, tt.id)
		check("MaskedMAC", m, err, tt.masked)
		mc, err := MulticastMAC(vip)
		check("MulticastMAC", mc, err, tt.mcast)
		ig, err := IGMPMAC(vip)
		check("IGMPMAC", ig, err, tt.igmp)
		g, err := IGMPGroup(vip)
		if err != nil || g.String() != tt.group {
			t.Errorf("IGMPGroup(%s) = %v, %v; want %s", tt.vip, g, err, tt.group)
		}
		// The unicast MAC is a locally administered unicast address; the
		// multicast ones have the group bit.
		if u[0]&1 != 0 || u[0]&2 == 0 || mc[0]&1 == 0 || ig[0]&1 == 0 {
			t.Errorf("%s: address bits wrong: %v %v %v", tt.vip, u, mc, ig)
		}
	}
	// An IPv6-only cluster's primary VIP gives its last four bytes.
	if m, err := UnicastMAC(netip.MustParseAddr("2001:2::c612:64")); err != nil || m.String() != "02:bf:c6:12:00:64" {
		t.Errorf("UnicastMAC(2001:2::c612:64) = %v, %v", m, err)
	}
	if g, err := MLDGroup(netip.MustParseAddr("198.18.0.100")); err != nil || g.String() != "ff05::bf:c612:64" {
		t.Errorf("MLDGroup = %v, %v", g, err)
	}
	if m, err := IGMPMAC6(netip.MustParseAddr("198.18.0.100")); err != nil || m.String() != "33:33:c6:12:00:64" {
		t.Errorf("IGMPMAC6 = %v, %v", m, err)
	}
	if _, err := MaskedMAC(netip.MustParseAddr("198.18.0.1"), 0); err == nil {
		t.Error("host ID 0 accepted")
	}
}
