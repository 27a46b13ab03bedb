// Package macmode puts the cluster on the wire: the cluster MAC addresses
// of the three modes (unicast, multicast, IGMP multicast), NIC setup and
// exact teardown, and ARP.
package macmode

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/nlbproject/nlb/filter"
)

// The addresses below are those Microsoft documents for Network Load
// Balancing, derived from the primary VIP W.X.Y.Z:
//
//	unicast cluster MAC     02:bf:W:X:Y:Z
//	masked source (host h)  02:h:W:X:Y:Z
//	multicast cluster MAC   03:bf:W:X:Y:Z
//	IGMP multicast MAC      01:00:5e:7f:Y:Z, group 239.255.Y.Z

// An IPv6-only cluster's primary VIP gives its last four bytes as
// W.X.Y.Z (ClusterID): two IPv6-only clusters on one segment need
// primary VIPs that differ there.
func octets(vip netip.Addr) ([4]byte, error) {
	if !vip.IsValid() {
		return [4]byte{}, fmt.Errorf("cluster MAC: no VIP")
	}
	return ClusterID(vip).As4(), nil
}

// ClusterID is the four bytes that name the cluster on the wire (MAC
// addresses, heartbeats): the primary VIP if IPv4, else its last four
// bytes, as an IPv4 address.
func ClusterID(primary netip.Addr) netip.Addr {
	a := primary.As16()
	return netip.AddrFrom4([4]byte(a[12:16]))
}

// UnicastMAC is the cluster MAC of unicast mode: every host's NIC uses it.
func UnicastMAC(vip netip.Addr) (net.HardwareAddr, error) {
	o, err := octets(vip)
	if err != nil {
		return nil, err
	}
	return net.HardwareAddr{0x02, 0xbf, o[0], o[1], o[2], o[3]}, nil
}

// MaskedMAC is the source MAC host id puts on outgoing frames in unicast
// mode, so that switches never learn the cluster MAC and keep flooding it.
func MaskedMAC(vip netip.Addr, id uint8) (net.HardwareAddr, error) {
	if id == 0 || id > filter.MaxHostID {
		return nil, fmt.Errorf("masked MAC: host ID %d out of range 1..%d", id, filter.MaxHostID)
	}
	o, err := octets(vip)
	if err != nil {
		return nil, err
	}
	return net.HardwareAddr{0x02, id, o[0], o[1], o[2], o[3]}, nil
}

// MulticastMAC is the cluster MAC of multicast mode, added to each NIC's
// multicast list; ARP for the VIP answers with it.
func MulticastMAC(vip netip.Addr) (net.HardwareAddr, error) {
	o, err := octets(vip)
	if err != nil {
		return nil, err
	}
	return net.HardwareAddr{0x03, 0xbf, o[0], o[1], o[2], o[3]}, nil
}

// IGMPGroup is the multicast group IGMP mode joins: 239.255.Y.Z.
func IGMPGroup(vip netip.Addr) (netip.Addr, error) {
	o, err := octets(vip)
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.AddrFrom4([4]byte{239, 255, o[2], o[3]}), nil
}

// IGMPMAC is the cluster MAC of IGMP multicast mode, the group's Ethernet
// address: 01:00:5e:7f:Y:Z.
func IGMPMAC(vip netip.Addr) (net.HardwareAddr, error) {
	o, err := octets(vip)
	if err != nil {
		return nil, err
	}
	return net.HardwareAddr{0x01, 0x00, 0x5e, 0x7f, o[2], o[3]}, nil
}

// MLDGroup is IGMP mode's IPv6 counterpart of IGMPGroup, joined with MLD
// when the cluster has IPv6 VIPs: ff05::bf:WX:YZ (site-local scope),
// whose Ethernet address is 33:33:W:X:Y:Z (IGMPMAC6).
func MLDGroup(vip netip.Addr) (netip.Addr, error) {
	o, err := octets(vip)
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.AddrFrom16([16]byte{0xff, 0x05, 10: 0x00, 11: 0xbf, 12: o[0], 13: o[1], 14: o[2], 15: o[3]}), nil
}

// IGMPMAC6 is the MAC IGMP mode gives the IPv6 VIPs in neighbour
// advertisements: MLDGroup's Ethernet address, 33:33:W:X:Y:Z.
func IGMPMAC6(vip netip.Addr) (net.HardwareAddr, error) {
	o, err := octets(vip)
	if err != nil {
		return nil, err
	}
	return net.HardwareAddr{0x33, 0x33, o[0], o[1], o[2], o[3]}, nil
}
