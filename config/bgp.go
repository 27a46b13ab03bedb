package config

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// BGPConfig is host.bgp: this host announces the cluster's VIPs to its
// routers while the cluster can serve them (docs/scale-out.md).
type BGPConfig struct {
	// LocalAS is this host's AS number (the cluster's: every host of a
	// cluster uses the same one).
	LocalAS uint32 `yaml:"local_as"`
	// RouterID defaults to the dedicated IP.
	RouterID string `yaml:"router_id"`
	// NextHop is the address the routes point at: a VIP on the routers'
	// segment, which every host answers for with the cluster MAC, so that
	// every host sees the traffic. Default: the first VIP.
	NextHop string `yaml:"next_hop"`
	// Announce lists the VIPs announced as /32 routes; default every VIP
	// but the next hop.
	Announce []string `yaml:"announce"`
	// HoldTime is the BGP hold time (default 9s, at least 3s): a router
	// drops this host's routes when it hears nothing for that long.
	HoldTime Duration        `yaml:"hold_time"`
	Peers    []BGPPeerConfig `yaml:"peers"`
}

// BGPPeerConfig is one router this host peers with.
type BGPPeerConfig struct {
	Address string `yaml:"address"`
	AS      uint32 `yaml:"as"`
	// Port is the router's BGP port (default 179).
	Port int `yaml:"port"`
	// PasswordFile holds the session's TCP MD5 password (RFC 2385), at
	// most 80 bytes, in a file only its owner can read.
	PasswordFile string `yaml:"password_file"`
	// TTLSecurity is the generalized TTL security mechanism (RFC 5082):
	// this host sends with TTL 255 and accepts only TTL 255, so only a
	// directly connected router can reach the session.
	TTLSecurity bool `yaml:"ttl_security"`
}

// BGP is the resolved host.bgp.
type BGP struct {
	LocalAS  uint32
	RouterID netip.Addr
	NextHop  netip.Addr
	Announce []netip.Addr
	HoldTime time.Duration
	Peers    []BGPPeer
}

// BGPPeer is one resolved peer.
type BGPPeer struct {
	Address     netip.Addr
	AS          uint32
	Port        uint16
	Password    string
	TTLSecurity bool
}

// DefaultBGPHoldTime is host.bgp.hold_time's default.
const DefaultBGPHoldTime = 9 * time.Second

// resolveBGP checks host.bgp against the resolved VIPs and dedicated IP.
func (r *Resolved) resolveBGP(b *BGPConfig, allowReadable bool, fail func(error)) {
	if b == nil {
		return
	}
	out := &BGP{LocalAS: b.LocalAS, RouterID: r.DedicatedIP.Addr(), HoldTime: DefaultBGPHoldTime}
	validAS := func(as uint32) bool { return as != 0 && as != 23456 && as != 4294967295 }
	if !validAS(b.LocalAS) {
		fail(cerr("host.bgp.local_as", fmt.Sprint(b.LocalAS), "must be an AS number, 1 to 4294967294 (not 23456)"))
	}
	if b.RouterID != "" {
		a, err := netip.ParseAddr(b.RouterID)
		if err != nil || !a.Is4() {
			fail(cerr("host.bgp.router_id", b.RouterID, "must be an IPv4 address"))
		}
		out.RouterID = a
	}
	// The sessions carry IPv4 routes (docs/scale-out.md): IPv6 VIPs are
	// neither next hop nor announced.
	if len(r.VIPs) > 0 && r.VIPs[0].Is4() {
		out.NextHop = r.VIPs[0]
	} else if b.NextHop == "" {
		fail(cerr("host.bgp.next_hop", "", "no IPv4 VIP to be the next hop: BGP here announces IPv4 routes only"))
	}
	if b.NextHop != "" {
		a, err := netip.ParseAddr(b.NextHop)
		if err != nil || !slices.Contains(r.VIPs, a) || !a.Is4() {
			fail(cerr("host.bgp.next_hop", b.NextHop, "must be one of the IPv4 cluster.vips: the routers must reach it as the cluster MAC, so that every host sees the traffic"))
		}
		out.NextHop = a
	}
	if len(b.Announce) == 0 {
		for _, v := range r.VIPs {
			if v != out.NextHop && v.Is4() {
				out.Announce = append(out.Announce, v)
			}
		}
		if len(out.Announce) == 0 && len(r.VIPs) > 0 {
			fail(cerr("host.bgp.announce", "", "nothing to announce: the only VIP is the next hop; add the service VIPs to cluster.vips"))
		}
	}
	for i, s := range b.Announce {
		a, err := netip.ParseAddr(s)
		switch {
		case err != nil || !slices.Contains(r.VIPs, a):
			fail(cerr(fmt.Sprintf("host.bgp.announce[%d]", i), s, "must be one of cluster.vips"))
		case a.Is6():
			fail(cerr(fmt.Sprintf("host.bgp.announce[%d]", i), s, "is IPv6: BGP here announces IPv4 routes only"))
		case a == out.NextHop:
			fail(cerr(fmt.Sprintf("host.bgp.announce[%d]", i), s, "is the next hop; a route cannot point at itself"))
		default:
			out.Announce = append(out.Announce, a)
		}
	}
	if b.HoldTime != 0 {
		out.HoldTime = time.Duration(b.HoldTime)
		if out.HoldTime < 3*time.Second || out.HoldTime > 65535*time.Second || out.HoldTime%time.Second != 0 {
			fail(cerr("host.bgp.hold_time", out.HoldTime.String(), "must be whole seconds, 3s to 65535s"))
		}
	}
	if len(b.Peers) == 0 {
		fail(cerr("host.bgp.peers", "", "at least one peer (a router) is required"))
	}
	for i, p := range b.Peers {
		key := fmt.Sprintf("host.bgp.peers[%d]", i)
		peer := BGPPeer{AS: p.AS, Port: 179, TTLSecurity: p.TTLSecurity}
		a, err := netip.ParseAddr(p.Address)
		if err != nil || !a.Is4() {
			fail(cerr(key+".address", p.Address, "must be an IPv4 address"))
		}
		peer.Address = a
		if !validAS(p.AS) {
			fail(cerr(key+".as", fmt.Sprint(p.AS), "must be an AS number, 1 to 4294967294 (not 23456)"))
		}
		if p.Port != 0 {
			if p.Port < 1 || p.Port > 65535 {
				fail(cerr(key+".port", fmt.Sprint(p.Port), "must be 1 to 65535"))
			}
			peer.Port = uint16(p.Port)
		}
		if p.PasswordFile != "" {
			pw, err := readSecret(key+".password_file", p.PasswordFile, allowReadable)
			switch {
			case err != nil:
				fail(err)
			case len(pw) == 0 || len(pw) > 80:
				fail(cerr(key+".password_file", p.PasswordFile, "the password is %d bytes: TCP MD5 takes 1 to 80", len(pw)))
			}
			peer.Password = string(pw)
		}
		for _, q := range out.Peers {
			if q.Address == peer.Address {
				fail(cerr(key+".address", p.Address, "listed twice"))
			}
		}
		out.Peers = append(out.Peers, peer)
	}
	r.BGP = out
}
