package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// bgpSection is a valid host.bgp for the example config, with a second
// VIP to announce.
func bgpConfig(t *testing.T, pwMode os.FileMode) string {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "bgp.pw")
	os.WriteFile(pw, []byte("s3cret\n"), pwMode)
	src := strings.Replace(exampleConfig(t), "vips: [198.18.0.100]", "vips: [198.18.0.100, 198.19.200.1]", 1)
	return src + `  bgp:
    local_as: 65001
    hold_time: 6s
    peers:
      - {address: 198.18.0.254, as: 65000, password_file: ` + pw + `, ttl_security: true}
`
}

func TestBGPConfig(t *testing.T) {
	c, err := Parse([]byte(bgpConfig(t, 0o600)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	b := r.BGP
	if b == nil || b.LocalAS != 65001 || b.RouterID != netip.MustParseAddr("198.18.0.1") ||
		b.NextHop != netip.MustParseAddr("198.18.0.100") || len(b.Announce) != 1 || b.Announce[0] != netip.MustParseAddr("198.19.200.1") ||
		b.HoldTime != 6*time.Second || len(b.Peers) != 1 || b.Peers[0].Password != "s3cret" || b.Peers[0].Port != 179 || !b.Peers[0].TTLSecurity {
		t.Fatalf("resolved %+v", b)
	}
	// A readable password file is refused, naming the key.
	c, _ = Parse([]byte(bgpConfig(t, 0o644)))
	if _, err := c.Resolve(); err == nil || !strings.Contains(err.Error(), "host.bgp.peers[0].password_file") {
		t.Fatalf("readable password: %v", err)
	}
	for _, tt := range []struct{ name, from, to, want string }{
		{"as", "local_as: 65001", "local_as: 0", "host.bgp.local_as"},
		{"as trans", "local_as: 65001", "local_as: 23456", "host.bgp.local_as"},
		{"peer as", "as: 65000", "as: 0", "host.bgp.peers[0].as"},
		{"peer address", "address: 198.18.0.254", "address: router", "host.bgp.peers[0].address"},
		{"next hop not a vip", "local_as: 65001", "local_as: 65001\n    next_hop: 198.18.0.254", "host.bgp.next_hop"},
		{"announce not a vip", "local_as: 65001", "local_as: 65001\n    announce: [198.19.200.9]", "host.bgp.announce[0]"},
		{"announce the next hop", "local_as: 65001", "local_as: 65001\n    announce: [198.18.0.100]", "host.bgp.announce[0]"},
		{"nothing to announce", "vips: [198.18.0.100, 198.19.200.1]", "vips: [198.18.0.100]", "host.bgp.announce"},
		{"only an IPv6 VIP besides the next hop", "vips: [198.18.0.100, 198.19.200.1]", `vips: [198.18.0.100, "2001:2::100"]`, "host.bgp.announce"},
		{"IPv6-only cluster", "vips: [198.18.0.100, 198.19.200.1]", `vips: ["2001:2::100"]`, "host.bgp.next_hop"},
		{"hold time", "hold_time: 6s", "hold_time: 1s", "host.bgp.hold_time"},
		{"no peers", "    peers:\n      - {address: 198.18.0.254, as: 65000", "    peers: []\n    x:\n      - {address: 198.18.0.254, as: 65000", "host.bgp"},
	} {
		src := strings.Replace(bgpConfig(t, 0o600), tt.from, tt.to, 1)
		c, err := Parse([]byte(src))
		if err == nil {
			_, err = c.Resolve()
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error naming %s", tt.name, err, tt.want)
		}
	}
}
