package capture

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/heartbeat"
)

// exampleConfig is examples/host1.yaml with a key of its own.
func exampleConfig(t *testing.T) *config.Resolved {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, bytes.Repeat([]byte("k"), 32), 0o600)
	b, err := os.ReadFile("../examples/host1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "c.yaml")
	os.WriteFile(p, []byte(strings.Replace(string(b), "/etc/nlb/cluster.key", key, 1)), 0o600)
	r, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func hostMAC(id uint8) net.HardwareAddr { return net.HardwareAddr{2, id, 198, 18, 0, 100} }

var clientMAC = net.HardwareAddr{2, 0x66, 0, 0, 0, 1}

func packetOf(t *testing.T, at time.Time, ls ...gopacket.SerializableLayer) gopacket.Packet {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	p := gopacket.NewPacket(buf.Bytes(), layers.LayerTypeEthernet, gopacket.Default)
	p.Metadata().Timestamp = at
	return p
}

func hbPacket(t *testing.T, at time.Time, r *config.Resolved, key *heartbeat.Key, vip netip.Addr, id uint8) gopacket.Packet {
	hb := &heartbeat.Heartbeat{ClusterVIP: vip, HostID: id, State: uint8(convergence.StateConverged), Incarnation: 7, Seq: uint64(at.UnixNano()),
		Epoch: 3, Phase: 2, View: 7, Members: 7, Rules: make([]heartbeat.RuleSetting, len(r.Rules)),
		DedicatedIP: netip.AddrFrom4([4]byte{198, 18, 0, id})}
	for i, s := range r.Settings() {
		hb.Rules[i] = heartbeat.RuleSetting{Weight: uint8(s.Weight), Priority: uint8(id)}
	}
	b, err := heartbeat.Marshal(hb, key)
	if err != nil {
		t.Fatal(err)
	}
	return packetOf(t, at, &layers.Ethernet{SrcMAC: hostMAC(id), DstMAC: layers.EthernetBroadcast, EthernetType: 0x886f}, gopacket.Payload(b))
}

func tcpPacket(t *testing.T, at time.Time, src net.HardwareAddr, from, to netip.AddrPort, syn, ack bool) gopacket.Packet {
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: from.Addr().AsSlice(), DstIP: to.Addr().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(from.Port()), DstPort: layers.TCPPort(to.Port()), SYN: syn, ACK: ack, Window: 1000}
	tcp.SetNetworkLayerForChecksum(ip)
	return packetOf(t, at, &layers.Ethernet{SrcMAC: src, DstMAC: clientMAC, EthernetType: layers.EthernetTypeIPv4}, ip, tcp)
}

// TestAnalyzer: heartbeats are shown and verified; a flow answered by two
// hosts, a flow answered by a host the (formed) tables do not give it to,
// another cluster's heartbeat, a forged one, a malformed frame and a
// silent host are each reported as a problem; a healthy flow is not.
func TestAnalyzer(t *testing.T) {
	r := exampleConfig(t)
	key := r.Keys.Heartbeat()[0]
	vip := r.VIPs[0]
	a := &Analyzer{Config: r, VIPs: r.VIPs, Keys: r.Keys.Heartbeat(), Tolerance: time.Second, AssumeFormed: true}
	t0 := time.Unix(1000, 0)
	var evs []Event
	feed := func(p gopacket.Packet) { evs = append(evs, a.Packet(p)...) }
	for _, id := range []uint8{1, 2, 3} {
		feed(hbPacket(t, t0, r, &key, vip, id))
	}
	// Two client flows that the formed tables give to different hosts.
	client := netip.MustParseAddr("198.19.0.5")
	vipPort := netip.AddrPortFrom(vip, 80)
	var owned, other netip.AddrPort
	var owner uint8
	for port := uint16(40000); owner == 0 || other == (netip.AddrPort{}); port++ {
		c := netip.AddrPortFrom(client, port)
		p := tcpPacket(t, t0, clientMAC, c, vipPort, true, false)
		o := a.owner(p.Data())
		switch {
		case owner == 0:
			owner, owned = o, c
		case o != owner && other == (netip.AddrPort{}):
			other = c
		}
	}
	notOwner := uint8(1)
	for notOwner == owner {
		notOwner++
	}
	at := t0.Add(10 * time.Millisecond)
	// A healthy flow: SYN, the owner's SYN-ACK.
	feed(tcpPacket(t, at, clientMAC, owned, vipPort, true, false))
	feed(tcpPacket(t, at, hostMAC(owner), vipPort, owned, true, true))
	for _, e := range evs {
		if e.Kind == "problem" {
			t.Fatalf("healthy so far, yet: %s", e.Text)
		}
	}
	// The same flow answered by another host too.
	feed(tcpPacket(t, at, hostMAC(notOwner), vipPort, owned, true, true))
	// Another flow answered only by a host that is not its owner.
	oo := a.owner(tcpPacket(t, at, clientMAC, other, vipPort, true, false).Data())
	wrong := uint8(1)
	for wrong == oo {
		wrong++
	}
	feed(tcpPacket(t, at, clientMAC, other, vipPort, true, false))
	feed(tcpPacket(t, at, hostMAC(wrong), vipPort, other, true, true))
	// Another cluster, a forgery, junk.
	otherKey := heartbeat.DeriveKey([]byte("someone else's key of 32 bytes or more"))
	feed(hbPacket(t, at, r, &key, netip.MustParseAddr("198.18.9.9"), 4))
	feed(hbPacket(t, at, r, &otherKey, vip, 2))
	feed(packetOf(t, at, &layers.Ethernet{SrcMAC: clientMAC, DstMAC: layers.EthernetBroadcast, EthernetType: 0x886f}, gopacket.Payload([]byte("junk"))))
	// Hosts 1 and 2 keep sending; host 3 falls silent.
	for i := 1; i <= 20; i++ {
		at := t0.Add(time.Duration(i) * 100 * time.Millisecond)
		feed(hbPacket(t, at, r, &key, vip, 1))
		feed(hbPacket(t, at, r, &key, vip, 2))
	}
	evs = append(evs, a.Finish(t0.Add(2100*time.Millisecond))...)

	var problems []string
	verified := 0
	for _, e := range evs {
		if e.Kind == "problem" {
			problems = append(problems, e.Text)
		}
		if e.Kind == "heartbeat" && e.Verified {
			verified++
		}
	}
	want := []string{
		"answered by 2 hosts",
		"but the tables give it to host",
		"another cluster (VIP 198.18.9.9",
		"does not verify",
		"malformed frame",
		"no heartbeat from host 3",
	}
	// The flow answered twice is also answered by a host that is not its
	// owner: reported both ways.
	if len(problems) != len(want)+1 {
		t.Errorf("%d problems, want %d:\n%s", len(problems), len(want)+1, strings.Join(problems, "\n"))
	}
	for _, w := range want {
		found := false
		for _, p := range problems {
			found = found || strings.Contains(p, w)
		}
		if !found {
			t.Errorf("no problem says %q:\n%s", w, strings.Join(problems, "\n"))
		}
	}
	if verified != 43 {
		t.Errorf("%d verified heartbeats, want 43", verified)
	}
}

// TestAnalyzerLookup: with a Lookup (the live tables), a flow answered by
// a host other than the one the cluster names is reported once the
// lookup returns, even after the answer; remote-control datagrams, which
// every host answers, are not flows.
func TestAnalyzerLookup(t *testing.T) {
	r := exampleConfig(t)
	key := r.Keys.Heartbeat()[0]
	vip := r.VIPs[0]
	a := &Analyzer{Config: r, VIPs: r.VIPs, Keys: r.Keys.Heartbeat(),
		Lookup: func(_ []byte, f Flow) (uint8, error) { return 2, nil }}
	t0 := time.Unix(1000, 0)
	var evs []Event
	for _, id := range []uint8{1, 2, 3} {
		evs = append(evs, a.Packet(hbPacket(t, t0, r, &key, vip, id))...)
	}
	c := netip.MustParseAddrPort("198.19.0.5:40000")
	v := netip.AddrPortFrom(vip, 80)
	evs = append(evs, a.Packet(tcpPacket(t, t0, clientMAC, c, v, true, false))...)
	evs = append(evs, a.Packet(tcpPacket(t, t0, hostMAC(3), v, c, true, true))...)
	rc := netip.AddrPortFrom(vip, r.RemotePort)
	for _, id := range []uint8{1, 2, 3} {
		udp := &layers.UDP{SrcPort: layers.UDPPort(rc.Port()), DstPort: 40001}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: vip.AsSlice(), DstIP: c.Addr().AsSlice()}
		udp.SetNetworkLayerForChecksum(ip)
		evs = append(evs, a.Packet(packetOf(t, t0, &layers.Ethernet{SrcMAC: hostMAC(id), DstMAC: clientMAC, EthernetType: layers.EthernetTypeIPv4}, ip, udp))...)
	}
	evs = append(evs, a.Finish(t0)...)
	var problems []string
	for _, e := range evs {
		if e.Kind == "problem" {
			problems = append(problems, e.Text)
		}
	}
	if len(problems) != 1 || !strings.Contains(problems[0], "answered by host 3, but the tables give it to host 2") {
		t.Errorf("problems %q", problems)
	}
	owners := 0
	for _, e := range evs {
		if e.Kind == "owner" && e.Owner == 2 {
			owners++
		}
	}
	if owners != 1 {
		t.Errorf("%d owner annotations, want 1", owners)
	}
}

// TestAnalyzerNDP: neighbour discovery for an IPv6 VIP shows, like ARP.
func TestAnalyzerNDP(t *testing.T) {
	vip := netip.MustParseAddr("2001:2::100")
	a := &Analyzer{VIPs: []netip.Addr{vip}}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: netip.MustParseAddr("2001:2::5").AsSlice(), DstIP: netip.MustParseAddr("ff02::1:ff00:100").AsSlice()}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	icmp.SetNetworkLayerForChecksum(ip)
	ns := &layers.ICMPv6NeighborSolicitation{TargetAddress: vip.AsSlice()}
	p := packetOf(t, time.Unix(1, 0), &layers.Ethernet{SrcMAC: clientMAC, DstMAC: net.HardwareAddr{0x33, 0x33, 0xff, 0, 1, 0}, EthernetType: layers.EthernetTypeIPv6}, ip, icmp, ns)
	evs := a.Packet(p)
	if len(evs) != 1 || evs[0].Kind != "ndp" || !strings.Contains(evs[0].Text, "2001:2::100") {
		t.Errorf("events %+v", evs)
	}
}

// TestAnalyzerIPv6Flow: an IPv6 flow to an IPv6 VIP answered by two
// hosts is a problem, named with bracketed addresses.
func TestAnalyzerIPv6Flow(t *testing.T) {
	vip := netip.MustParseAddr("2001:2::100")
	a := &Analyzer{VIPs: []netip.Addr{vip}}
	a.init()
	a.macHost[[6]byte(hostMAC(1))], a.macHost[[6]byte(hostMAC(2))] = 1, 2 // as their heartbeats would teach it
	c := netip.MustParseAddrPort("[2001:2::5]:40000")
	v := netip.AddrPortFrom(vip, 80)
	tcp6 := func(src net.HardwareAddr, from, to netip.AddrPort, syn, ack bool) gopacket.Packet {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: from.Addr().AsSlice(), DstIP: to.Addr().AsSlice()}
		tcp := &layers.TCP{SrcPort: layers.TCPPort(from.Port()), DstPort: layers.TCPPort(to.Port()), SYN: syn, ACK: ack, Window: 1000}
		tcp.SetNetworkLayerForChecksum(ip)
		return packetOf(t, time.Unix(1, 0), &layers.Ethernet{SrcMAC: src, DstMAC: clientMAC, EthernetType: layers.EthernetTypeIPv6}, ip, tcp)
	}
	var evs []Event
	evs = append(evs, a.Packet(tcp6(clientMAC, c, v, true, false))...)
	evs = append(evs, a.Packet(tcp6(hostMAC(1), v, c, true, true))...)
	evs = append(evs, a.Packet(tcp6(hostMAC(2), v, c, true, true))...)
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind+": "+e.Text)
	}
	want := "[2001:2::5]:40000 -> [2001:2::100]:80/tcp answered by 2 hosts"
	if len(evs) == 0 || !strings.Contains(strings.Join(kinds, "\n"), want) {
		t.Errorf("events:\n%s\nwant %q", strings.Join(kinds, "\n"), want)
	}
}
