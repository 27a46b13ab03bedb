package capture

import (
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/filter"
)

// Flow names a client flow to a VIP: what a taker is asked about.
type Flow struct {
	Client, VIP netip.AddrPort
	Proto       string // tcp or udp
}

func (f Flow) String() string { return fmt.Sprintf("%s -> %s/%s", f.Client, f.VIP, f.Proto) }

// Taker says which host takes a flow (0: none), given one of its frames.
type Taker func(frame []byte, f Flow) (uint8, error)

// ModelTaker is the taker of the model: the one host whose filter accepts.
func ModelTaker(m *Model) Taker {
	return func(frame []byte, _ Flow) (uint8, error) {
		if t := Takers(m.Decide(frame)); len(t) == 1 {
			return t[0], nil
		}
		return 0, nil
	}
}

// HostShare is one host's part of a replayed capture.
type HostShare struct {
	Host    uint8   `json:"host"`
	Flows   int     `json:"flows"`
	Packets int     `json:"packets"`
	Share   float64 `json:"flow_share"`
	// PacketShare is the host's part of the VIP packets.
	PacketShare float64 `json:"packet_share"`
	// Expected is the host's share of the weights of the flows' rules
	// (equal weights: 1/N), Imbalance its share over that (1 = exact).
	Expected  float64 `json:"expected_share"`
	Imbalance float64 `json:"imbalance"`
}

// BucketCount is one of the busiest buckets.
type BucketCount struct {
	Rule    string `json:"rule"`
	Bucket  int    `json:"bucket"`
	Host    uint8  `json:"host"`
	Packets int    `json:"packets"`
	Flows   int    `json:"flows"`
}

// Report is what a capture's VIP traffic does to the cluster.
type Report struct {
	Frames    int           `json:"frames"`
	VIPFrames int           `json:"vip_frames"`
	Flows     int           `json:"flows"`
	Untaken   int           `json:"flows_taken_by_no_host"`
	Hosts     []HostShare   `json:"hosts"`
	Busiest   []BucketCount `json:"busiest_buckets"`
}

// Replay reads a pcap of Ethernet frames and counts, per host, the flows
// and packets to the VIPs that the taker gives it. Only frames from
// clients to VIPs count (replies are the same flows), and not remote
// control; a flow is a TCP or UDP 5-tuple (a TCP SYN after other frames
// starts a new one). Weights are r's (this host's view of every member's).
func Replay(in io.Reader, r *config.Resolved, members []uint8, take Taker) (*Report, error) {
	pr, err := pcapgo.NewReader(in)
	if err != nil {
		return nil, err
	}
	one := NewModel(r, map[uint8][]filter.RuleSetting{members[0]: r.Settings()}) // bucket and rule only
	type bucketKey struct{ rule, bucket int }
	flows := map[Flow]uint8{} // the taker of each 5-tuple's current flow
	perHost := map[uint8]int{}
	expected := map[uint8]float64{}
	packets := map[uint8]int{}
	lastSyn := map[Flow]bool{} // the flow's last frame was a SYN: a retransmission is not a new flow
	buckets := map[bucketKey]*BucketCount{}
	rep := &Report{}
	src := gopacket.NewPacketSource(pr, pr.LinkType())
	for {
		p, err := src.NextPacket()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		rep.Frames++
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		if ip == nil {
			continue
		}
		dst := netip.AddrFrom4([4]byte(ip.DstIP.To4()))
		if !slices.Contains(r.VIPs, dst) {
			continue
		}
		f := Flow{VIP: netip.AddrPortFrom(dst, 0)}
		client := netip.AddrFrom4([4]byte(ip.SrcIP.To4()))
		syn := false
		switch {
		case p.Layer(layers.LayerTypeTCP) != nil:
			t := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
			f.Client, f.VIP, f.Proto = netip.AddrPortFrom(client, uint16(t.SrcPort)), netip.AddrPortFrom(dst, uint16(t.DstPort)), "tcp"
			syn = t.SYN && !t.ACK
		case p.Layer(layers.LayerTypeUDP) != nil:
			u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
			f.Client, f.VIP, f.Proto = netip.AddrPortFrom(client, uint16(u.SrcPort)), netip.AddrPortFrom(dst, uint16(u.DstPort)), "udp"
			if remoteControl(r, r.VIPs, dst, uint16(u.DstPort), client, uint16(u.SrcPort)) {
				continue // remote control: every host answers, not a flow
			}
		default:
			continue
		}
		rep.VIPFrames++
		host, seen := flows[f]
		d := one.Decide(p.Data())[0]
		// A new flow: its 5-tuple's first frame, or a SYN after other
		// frames (a client may reuse a port for a later connection; a
		// SYN right after a SYN is a retransmission).
		isNew := !seen || syn && !lastSyn[f]
		if isNew {
			if host, err = take(p.Data(), f); err != nil {
				return nil, fmt.Errorf("flow %s: %w", f, err)
			}
			flows[f] = host
			rep.Flows++
			if host == 0 {
				rep.Untaken++
			} else {
				perHost[host]++
				if d.Rule >= 0 && d.Rule < len(r.Rules) && r.Rules[d.Rule].Mode == filter.ModeMultiple {
					// Spread by weight; nlbctl sees one host's file, so
					// every member is taken to have its weights: equal
					// shares.
					for _, id := range members {
						expected[id] += 1 / float64(len(members))
					}
				} else {
					expected[host]++ // single-host and default-host traffic has one taker
				}
			}
		}
		lastSyn[f] = syn
		packets[host]++
		if d.Bucket >= 0 {
			k := bucketKey{d.Rule, d.Bucket}
			b := buckets[k]
			if b == nil {
				b = &BucketCount{Rule: ruleName(r, d.Rule), Bucket: d.Bucket, Host: host}
				buckets[k] = b
			}
			b.Packets++
			if isNew {
				b.Flows++
			}
		}
	}
	for _, id := range members {
		hs := HostShare{Host: id, Flows: perHost[id], Packets: packets[id]}
		if rep.VIPFrames > 0 {
			hs.PacketShare = float64(packets[id]) / float64(rep.VIPFrames)
		}
		if taken := rep.Flows - rep.Untaken; taken > 0 {
			hs.Share = float64(perHost[id]) / float64(taken)
			hs.Expected = expected[id] / float64(taken)
			if hs.Expected > 0 {
				hs.Imbalance = hs.Share / hs.Expected
			}
		}
		rep.Hosts = append(rep.Hosts, hs)
	}
	for _, b := range buckets {
		rep.Busiest = append(rep.Busiest, *b)
	}
	slices.SortFunc(rep.Busiest, func(a, b BucketCount) int {
		if a.Packets != b.Packets {
			return b.Packets - a.Packets
		}
		return a.Bucket - b.Bucket
	})
	rep.Busiest = rep.Busiest[:min(len(rep.Busiest), 10)]
	return rep, nil
}

func ruleName(r *config.Resolved, ri int) string {
	switch {
	case ri == filter.DefaultRule:
		return "default"
	case ri >= 0 && ri < len(r.RuleNames):
		return r.RuleNames[ri]
	}
	return "none"
}
