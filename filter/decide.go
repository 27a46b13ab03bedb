package filter

import (
	"encoding/binary"
	"net/netip"
)

// Frame layout constants (IPv4 over Ethernet II).
const (
	ethHdrLen    = 14
	ipv4MinLen   = 20
	etherTypeIP4 = 0x0800
	etherTypeARP = 0x0806
	// EtherTypeHeartbeat is the ethertype of nlb heartbeats (as NLB's).
	EtherTypeHeartbeat = 0x886F

	ipProtoICMP = 1
	ipProtoTCP  = 6
	ipProtoUDP  = 17

	tcpFlagSYN = 0x02
	tcpFlagACK = 0x10

	icmpEchoRequest  = 8
	icmpDestUnreach  = 3
	icmpTimeExceeded = 11
	icmpParamProblem = 12
)

// State is everything the decision depends on besides the frame: the
// agreed cluster configuration and this host's marks. The eBPF program holds
// the same data in its state map (see datapath.go).
type State struct {
	// VIPs are the cluster's virtual IPs (IPv4, at most MaxVIPs).
	VIPs []netip.Addr
	// Rules are the port rules in canonical order (see SortRules); the index
	// of a rule here is its index in Marks and in the kernel.
	Rules []PortRule
	// Seed keys the flow hash.
	Seed Seed
	// RemotePort is the remote-control UDP port passed to every host, or 0
	// when remote control is off.
	RemotePort uint16
	// Marks holds this host's marks per rule; index DefaultRule is for
	// traffic that matches no rule. A nil entry means all MarkNone.
	Marks [MaxRules + 1]*Marks
	// LeaseValid is false when the agent's lease has expired: owned and
	// dirty buckets then behave as retained (no new flows).
	LeaseValid bool
	// HeartbeatBudget limits what each claimed host ID's heartbeat frames
	// pass to the agent (HeartbeatSources); the zero value is no limit.
	HeartbeatBudget HeartbeatBudget
	// Prefix6 is the IPv6 client prefix length `network` affinity hashes
	// (1–128); 0 means DefaultPrefix6.
	Prefix6 uint8
}

func (s *State) prefix6() int {
	if s.Prefix6 == 0 {
		return DefaultPrefix6
	}
	return int(s.Prefix6)
}

// HoldsFunc reports whether this host holds the TCP flow from client to vip:
// in the kernel, a socket-table lookup that finds an established,
// closing or request socket, or a listener whose SYN cookie accepts the ACK.
type HoldsFunc func(client, vip netip.AddrPort) bool

// Decision is the outcome of Decide with what led to it.
type Decision struct {
	Verdict Verdict
	Reason  Reason
	// Rule is the index of the rule that decided (DefaultRule for traffic
	// matching no rule), or -1 when no rule was consulted.
	Rule int
	// Bucket is the bucket consulted, or -1.
	Bucket int
}

func verdict(r Reason, rule, bucket int) Decision {
	return Decision{Verdict: r.Verdict(), Reason: r, Rule: rule, Bucket: bucket}
}

// noFlow is the decision for a frame decided before any rule or bucket:
// passed (not for a VIP) or dropped as malformed. Rule and Bucket are -1.
func noFlow(r Reason) Decision {
	return Decision{Verdict: r.Verdict(), Reason: r, Rule: -1, Bucket: -1}
}

// clusterID is the four bytes heartbeats carry for the primary VIP: the
// address if IPv4, its last four bytes if IPv6 (macmode.ClusterID).
func clusterID(primary netip.Addr) [4]byte {
	a := primary.As16()
	return [4]byte(a[12:16])
}

// decideHeartbeat passes a frame with the heartbeat ethertype only if it
// opens like a heartbeat of this cluster: magic, version, the primary
// VIP at bytes 8-11 of the message, and a host ID at byte 12 (which
// HeartbeatSources then holds to its budget). Anything else (junk, another
// cluster's heartbeats) is dropped in the kernel as malformed, so a flood
// of it never reaches the agent's socket, where real heartbeats would be
// lost with it. What passes still has to prove itself with its tag.
func (s *State) decideHeartbeat(m []byte) Decision {
	if len(m) < 13 || binary.BigEndian.Uint32(m[0:4]) != HeartbeatMagic || m[4] != HeartbeatVersion ||
		len(s.VIPs) > 0 && [4]byte(m[8:12]) != clusterID(s.VIPs[0]) {
		return noFlow(ReasonDropMalformed)
	}
	return noFlow(ReasonPassHeartbeat)
}

// flowClass selects how marks are applied to a packet.
type flowClass uint8

const (
	classStateless flowClass = iota // UDP, fragments, ICMP echo, other protocols
	classTCPSyn                     // TCP SYN (SYN set, ACK clear)
	classTCP                        // any other TCP packet, or an ICMP error about a TCP flow
)

// Decide is the reference decision for one Ethernet frame received on the
// cluster NIC. holds is consulted only for TCP packets in dirty or retained
// buckets (and owned ones when the lease has expired); it may be nil when
// the caller knows no flows are held. The eBPF program in filter/datapath/bpf/nlb.c
// makes exactly this decision; keep the two in step.
func Decide(frame []byte, s *State, holds HoldsFunc) Decision {
	if len(frame) < ethHdrLen {
		return noFlow(ReasonPassNotIP)
	}
	switch binary.BigEndian.Uint16(frame[12:14]) {
	case etherTypeIP4:
	case etherTypeIP6:
		return s.decide6(frame, holds)
	case etherTypeARP:
		return noFlow(ReasonPassARP)
	case EtherTypeHeartbeat:
		return s.decideHeartbeat(frame[ethHdrLen:])
	default:
		return noFlow(ReasonPassNotIP)
	}
	ip := frame[ethHdrLen:]
	if len(ip) < ipv4MinLen {
		return noFlow(ReasonPassShort)
	}
	dst := netip.AddrFrom4([4]byte(ip[16:20]))
	if !s.isVIP(dst) {
		return noFlow(ReasonPassNotVIP)
	}
	// From here on the frame is for a VIP: broken headers are dropped.
	ihl := int(ip[0]&0x0f) * 4
	totLen := int(binary.BigEndian.Uint16(ip[2:4]))
	if ip[0]>>4 != 4 || ihl < ipv4MinLen || totLen < ihl || len(ip) < ihl {
		return noFlow(ReasonDropMalformed)
	}
	end := len(ip)
	if totLen < end {
		end = totLen // Ethernet padding is not part of the datagram
	}
	proto := ip[9]
	src := netip.AddrFrom4([4]byte(ip[12:16]))
	l4 := ip[ihl:end]
	if frag := binary.BigEndian.Uint16(ip[6:8]); frag&0x3fff != 0 {
		// A fragment (MF set or non-zero offset). Only the first fragment
		// has ports, so every fragment of a datagram goes where the
		// client address hashes in the first rule for (VIP, protocol)
		// that is not disabled. The first fragment is also checked
		// against its own port's rule: a disabled rule drops it on every
		// host, so the datagram is never reassembled anywhere.
		if frag&0x1fff == 0 && (proto == ipProtoTCP || proto == ipProtoUDP) && len(l4) >= 4 {
			if pr := s.matchRule(dst, binary.BigEndian.Uint16(l4[2:4]), proto, false); pr != DefaultRule && s.Rules[pr].Mode == ModeDisabled {
				return verdict(ReasonDropRuleDisabled, pr, -1)
			}
		}
		ri := s.matchRule(dst, 0, proto, true)
		return s.decideFlow(ri, src, 0, dst, 0, classStateless, holds)
	}
	switch proto {
	case ipProtoTCP:
		if len(l4) < 20 || int(l4[12]>>4)*4 < 20 || len(l4) < int(l4[12]>>4)*4 {
			return noFlow(ReasonDropMalformed)
		}
		sport := binary.BigEndian.Uint16(l4[0:2])
		dport := binary.BigEndian.Uint16(l4[2:4])
		class := classTCP
		if l4[13]&(tcpFlagSYN|tcpFlagACK) == tcpFlagSYN {
			class = classTCPSyn
		}
		ri := s.matchRule(dst, dport, proto, false)
		return s.decideFlow(ri, src, sport, dst, dport, class, holds)
	case ipProtoUDP:
		if len(l4) < 8 {
			return noFlow(ReasonDropMalformed)
		}
		sport := binary.BigEndian.Uint16(l4[0:2])
		dport := binary.BigEndian.Uint16(l4[2:4])
		if s.RemotePort != 0 && dport == s.RemotePort {
			return noFlow(ReasonPassRemoteControl)
		}
		ri := s.matchRule(dst, dport, proto, false)
		return s.decideFlow(ri, src, sport, dst, dport, classStateless, holds)
	case ipProtoICMP:
		if len(l4) < 8 {
			return noFlow(ReasonDropMalformed)
		}
		switch l4[0] {
		case icmpDestUnreach, icmpTimeExceeded, icmpParamProblem:
			return s.decideICMPError(dst, l4[8:], holds)
		}
		// Echo requests and other ICMP: one host, the default host.
		return s.decideFlow(DefaultRule, src, 0, dst, 0, classStateless, holds)
	}
	return s.decideFlow(DefaultRule, src, 0, dst, 0, classStateless, holds)
}

// decideICMPError decides an ICMP error by the header it quotes: a packet
// the cluster sent from vip to a client. It goes where that flow goes.
func (s *State) decideICMPError(vip netip.Addr, inner []byte, holds HoldsFunc) Decision {
	if len(inner) < ipv4MinLen {
		return noFlow(ReasonDropMalformed)
	}
	ihl := int(inner[0]&0x0f) * 4
	if inner[0]>>4 != 4 || ihl < ipv4MinLen || netip.AddrFrom4([4]byte(inner[12:16])) != vip {
		return noFlow(ReasonDropMalformed)
	}
	if binary.BigEndian.Uint16(inner[6:8])&0x1fff != 0 {
		return noFlow(ReasonDropMalformed) // quotes a non-first fragment: no ports
	}
	client := netip.AddrFrom4([4]byte(inner[16:20]))
	proto := inner[9]
	if proto != ipProtoTCP && proto != ipProtoUDP {
		return s.decideFlow(DefaultRule, client, 0, vip, 0, classStateless, holds)
	}
	if len(inner) < ihl+8 {
		return noFlow(ReasonDropMalformed)
	}
	vport := binary.BigEndian.Uint16(inner[ihl : ihl+2])
	cport := binary.BigEndian.Uint16(inner[ihl+2 : ihl+4])
	ri := s.matchRule(vip, vport, proto, false)
	class := classStateless
	if proto == ipProtoTCP {
		class = classTCP
	}
	return s.decideFlow(ri, client, cport, vip, vport, class, holds)
}

// Flow locates a flow to a VIP: the table (rule index, or DefaultRule)
// and bucket it falls in. ok is false when vip is not a VIP or the rule is
// disabled, or the flow is remote control (passed to every host). The held-flow scan uses it to map sockets to buckets.
func (s *State) Flow(client, vip netip.AddrPort, ipProto uint8) (table, bucket int, ok bool) {
	if !s.isVIP(vip.Addr()) || ipProto == ipProtoUDP && s.RemotePort != 0 && vip.Port() == s.RemotePort {
		return 0, 0, false
	}
	ri := s.matchRule(vip.Addr(), vip.Port(), ipProto, false)
	aff := AffinityNone
	if ri != DefaultRule {
		if s.Rules[ri].Mode == ModeDisabled {
			return 0, 0, false
		}
		aff = s.Rules[ri].Affinity
	}
	return ri, int(s.Bucket(client.Addr(), client.Port(), aff)), true
}

// matchRule returns the index of the rule for (vip, port, proto), or
// DefaultRule. Rules are in canonical order, VIP-specific rules before
// all-VIP ones, so the first match is the most specific. anyPort matches
// on VIP and protocol only, skipping disabled rules (the fragment rule).
func (s *State) matchRule(vip netip.Addr, port uint16, proto uint8, anyPort bool) int {
	for i, r := range s.Rules {
		if i >= MaxRules {
			break
		}
		if !r.AllVIPs() && r.VIP != vip {
			continue
		}
		if !r.Protocol.Matches(proto) {
			continue
		}
		if anyPort && r.Mode == ModeDisabled {
			continue
		}
		if anyPort || (port >= r.StartPort && port <= r.EndPort) {
			return i
		}
	}
	return DefaultRule
}

// decideFlow applies the rule's mode and this host's mark of the flow's
// bucket.
func (s *State) decideFlow(ri int, client netip.Addr, cport uint16, vip netip.Addr, vport uint16, class flowClass, holds HoldsFunc) Decision {
	aff := AffinityNone
	if ri != DefaultRule {
		r := s.Rules[ri]
		if r.Mode == ModeDisabled {
			return verdict(ReasonDropRuleDisabled, ri, -1)
		}
		aff = r.Affinity
	}
	b := int(s.Bucket(client, cport, aff))
	mark := MarkNone
	if m := s.Marks[ri]; m != nil {
		mark = m[b]
	}
	if mark == MarkNone {
		return verdict(ReasonDropNotOwner, ri, b) // the cheap path: no lookup
	}
	if class == classStateless {
		switch {
		case mark == MarkRetained:
			return verdict(ReasonDropNotOwner, ri, b)
		case !s.LeaseValid:
			return verdict(ReasonDropLeaseExpired, ri, b)
		}
		return verdict(ReasonAcceptOwner, ri, b)
	}
	if s.LeaseValid {
		switch {
		case mark == MarkOwned:
			return verdict(ReasonAcceptOwner, ri, b)
		case mark == MarkDirty && class == classTCPSyn:
			return verdict(ReasonAcceptOwner, ri, b)
		}
	}
	// Dirty, retained, or owned without a lease: only held flows pass.
	if class != classTCPSyn && holds != nil &&
		holds(netip.AddrPortFrom(client, cport), netip.AddrPortFrom(vip, vport)) {
		return verdict(ReasonAcceptHeldFlow, ri, b)
	}
	switch {
	case mark == MarkRetained:
		return verdict(ReasonDropNotOwner, ri, b)
	case !s.LeaseValid:
		return verdict(ReasonDropLeaseExpired, ri, b)
	}
	return verdict(ReasonDropDirtyNonSYN, ri, b)
}
