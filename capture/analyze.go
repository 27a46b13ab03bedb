package capture

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
	"github.com/nlbproject/nlb/remote"
)

// Event is one line of nlbctl capture: what was seen, or (Problem set)
// what is wrong.
type Event struct {
	Time time.Time `json:"time"`
	// Kind: heartbeat, chunk, arp, ndp, flow, owner (a flow's owner from
	// the live tables), answer, problem.
	Kind string `json:"kind"`
	// Host is the sender of a heartbeat or chunk, the host that answered
	// a flow, or a host a problem is about (0: none).
	Host uint8 `json:"host,omitempty"`
	// Hosts are the hosts a problem names (a flow answered twice).
	Hosts []uint8 `json:"hosts,omitempty"`
	// Flow is client -> VIP/proto for flow and answer events.
	Flow string `json:"flow,omitempty"`
	// Owner is the host the tables say takes the flow (0: unknown).
	Owner uint8 `json:"owner,omitempty"`
	// Verified is whether a heartbeat's or chunk's tag verified (false
	// without a key).
	Verified bool `json:"verified,omitempty"`
	// Text says it for people.
	Text string `json:"text"`
}

// Analyzer turns captured frames into events. VIPs, Keys, Config and
// Tolerance are optional: without VIPs it learns them from heartbeats,
// without Keys it cannot verify tags, without Config it cannot say which
// host should take a flow, and without Tolerance it does not report
// heartbeat gaps.
type Analyzer struct {
	VIPs []netip.Addr
	Keys heartbeat.Keyring
	// Config gives the rules and hash seed of the expected owner, with the
	// members and settings learned from heartbeats.
	Config *config.Resolved
	// Tolerance is the longest silence of a host's heartbeats that is
	// not a problem (the cluster's dead-after time).
	Tolerance time.Duration
	// AssumeFormed takes, until a whole epoch's table chunks are
	// captured, the tables of a cluster just formed by the members heard
	// (Model). Tables depend on their history, so this is right only for
	// such a cluster; without it the owner of a flow is known only from
	// captured chunks.
	AssumeFormed bool
	// Lookup, if set, asks the cluster which host takes a flow (the live
	// tables, through the agents: nlbctl's filter). It runs in the
	// background, a few lookups at a time; a flow's answers are checked
	// against it when it returns. Flows whose lookup cannot be queued are
	// not checked.
	Lookup Taker

	lookups chan lookupJob
	results chan lookupResult
	pending int

	hosts   map[uint8]*hostSeen
	macHost map[[6]byte]uint8
	flows   map[string]*flowSeen
	chunks  map[uint64]*chunkSet // by epoch
	model   *Model
	modelOf string // members and settings the model was built from
	tables  *convergence.Tables
	epoch   uint64
}

type hostSeen struct {
	last     time.Time
	reported bool // a gap reported, until the next heartbeat
	hb       *heartbeat.Heartbeat
}

type flowSeen struct {
	key          string
	owner        uint8
	answered     []uint8 // hosts that answered
	opened       []uint8 // of those, hosts whose answer opens the flow (SYN-ACK, UDP)
	twice, wrong bool    // reported
}

type lookupJob struct {
	f     *flowSeen
	flow  Flow
	frame []byte
}

type lookupResult struct {
	f     *flowSeen
	owner uint8
}

// lookupWorkers is how many lookups run at once.
const lookupWorkers = 4

type chunkSet struct {
	tables convergence.Tables
	got    map[[2]uint8]bool
}

func (a *Analyzer) init() {
	if a.hosts == nil {
		a.hosts, a.macHost, a.flows, a.chunks = map[uint8]*hostSeen{}, map[[6]byte]uint8{}, map[string]*flowSeen{}, map[uint64]*chunkSet{}
	}
}

// Packet analyzes one captured frame.
func (a *Analyzer) Packet(p gopacket.Packet) []Event {
	a.init()
	at := p.Metadata().Timestamp
	var out []Event
	out = append(out, a.gaps(at)...)
	out = append(out, a.looked(at, false)...)
	eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	if eth == nil {
		return out
	}
	src := [6]byte(eth.SrcMAC)
	switch {
	case p.Layer(LayerTypeNLB) != nil:
		out = append(out, a.nlb(at, src, p.Layer(LayerTypeNLB).(*NLB))...)
	case p.Layer(layers.LayerTypeARP) != nil:
		out = append(out, a.arp(at, p.Layer(layers.LayerTypeARP).(*layers.ARP))...)
	case p.Layer(layers.LayerTypeICMPv6NeighborSolicitation) != nil || p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement) != nil:
		out = append(out, a.ndp(at, p)...)
	case p.Layer(layers.LayerTypeIPv4) != nil, p.Layer(layers.LayerTypeIPv6) != nil:
		out = append(out, a.ip(at, src, p)...)
	}
	return out
}

// Finish reports what the end of the capture shows: hosts whose
// heartbeats stopped before it ended.
func (a *Analyzer) Finish(at time.Time) []Event {
	a.init()
	return append(a.looked(at, true), a.gaps(at)...)
}

// lookup queues a background lookup of f's owner.
func (a *Analyzer) lookup(f *flowSeen, flow Flow, frame []byte) {
	if a.lookups == nil {
		a.lookups, a.results = make(chan lookupJob, 1024), make(chan lookupResult, 1024)
		for range lookupWorkers {
			go func() {
				for j := range a.lookups {
					owner, err := a.Lookup(j.frame, j.flow)
					if err != nil {
						owner = 0
					}
					a.results <- lookupResult{j.f, owner}
				}
			}()
		}
	}
	select {
	case a.lookups <- lookupJob{f, flow, append([]byte(nil), frame...)}:
		a.pending++
	default: // too many at once: this flow goes unchecked
	}
}

// looked takes the lookups that returned (all of them, waiting up to 3 s,
// when wait) and checks their flows' answers.
func (a *Analyzer) looked(at time.Time, wait bool) []Event {
	var out []Event
	deadline := time.After(3 * time.Second)
	for a.pending > 0 {
		var r lookupResult
		if wait {
			select {
			case r = <-a.results:
			case <-deadline:
				return out
			}
		} else {
			select {
			case r = <-a.results:
			default:
				return out
			}
		}
		a.pending--
		if r.owner == 0 {
			continue
		}
		r.f.owner = r.owner
		out = append(out, Event{Time: at, Kind: "owner", Flow: r.f.key, Owner: r.owner,
			Text: fmt.Sprintf("%s: host %d takes it (live tables)", r.f.key, r.owner)})
		for _, h := range r.f.opened {
			out = append(out, a.checkOwner(at, r.f, h)...)
		}
	}
	return out
}

// checkOwner reports an answer that opened f from a host that is not its
// owner.
func (a *Analyzer) checkOwner(at time.Time, f *flowSeen, host uint8) []Event {
	if f.owner == 0 || host == f.owner || f.wrong {
		return nil
	}
	f.wrong = true
	return []Event{{Time: at, Kind: "problem", Flow: f.key, Host: host, Owner: f.owner,
		Text: fmt.Sprintf("%s answered by host %d, but the tables give it to host %d", f.key, host, f.owner)}}
}

func problem(at time.Time, host uint8, format string, args ...any) Event {
	return Event{Time: at, Kind: "problem", Host: host, Text: fmt.Sprintf(format, args...)}
}

func (a *Analyzer) gaps(at time.Time) []Event {
	if a.Tolerance <= 0 {
		return nil
	}
	var out []Event
	for _, id := range sortedKeys(a.hosts) {
		h := a.hosts[id]
		if gap := at.Sub(h.last); !h.reported && gap > a.Tolerance && heartbeatState(h.hb) {
			h.reported = true
			out = append(out, problem(at, id, "no heartbeat from host %d for %v (tolerance %v)", id, gap.Round(time.Millisecond), a.Tolerance))
		}
	}
	return out
}

// heartbeatState: only a host that took part is expected to keep
// sending; a stopped host's silence is an operator's choice.
func heartbeatState(hb *heartbeat.Heartbeat) bool {
	return hb != nil && convergence.State(hb.State) != convergence.StateStopped
}

func (a *Analyzer) ourVIP(v netip.Addr) bool {
	return len(a.VIPs) == 0 || slices.Contains(a.VIPs, v)
}

// ourCluster: heartbeats carry the primary VIP's four bytes (an IPv6
// VIP's last four, macmode.ClusterID).
func (a *Analyzer) ourCluster(id netip.Addr) bool {
	return len(a.VIPs) == 0 || slices.ContainsFunc(a.VIPs, func(x netip.Addr) bool {
		b := x.As16()
		return netip.AddrFrom4([4]byte(b[12:16])) == id
	})
}

func (a *Analyzer) nlb(at time.Time, src [6]byte, l *NLB) []Event {
	if l.Err != nil {
		return []Event{problem(at, 0, "malformed frame of the heartbeat ethertype from %s: %v", macString(src), l.Err)}
	}
	verified := len(a.Keys) > 0 && l.Verify(a.Keys)
	badTag := len(a.Keys) > 0 && !verified
	switch m := l.Msg.(type) {
	case *heartbeat.Heartbeat:
		if !a.ourCluster(m.ClusterVIP) {
			return []Event{problem(at, m.HostID, "heartbeat of another cluster (VIP %s, host %d) from %s", m.ClusterVIP, m.HostID, macString(src))}
		}
		if badTag {
			return []Event{problem(at, m.HostID, "heartbeat claiming host %d with a tag that does not verify (another key, or forged) from %s", m.HostID, macString(src))}
		}
		if len(a.VIPs) == 0 {
			a.VIPs = []netip.Addr{m.ClusterVIP}
		}
		h := a.hosts[m.HostID]
		if h == nil {
			h = &hostSeen{}
			a.hosts[m.HostID] = h
		}
		h.last, h.reported, h.hb = at, false, m
		a.macHost[src] = m.HostID
		if m.Epoch > a.epoch {
			a.epoch = m.Epoch
		}
		return []Event{{Time: at, Kind: "heartbeat", Host: m.HostID, Verified: verified,
			Text: fmt.Sprintf("host %d %s epoch %d phase %d view %s members %s inc %d%s", m.HostID, convergence.State(m.State),
				m.Epoch, m.Phase, idList(m.View), idList(m.Members), m.Incarnation, verifiedNote(a.Keys, verified))}}
	case *heartbeat.TableChunk:
		if !a.ourCluster(m.ClusterVIP) {
			return []Event{problem(at, m.HostID, "table chunk of another cluster (VIP %s) from %s", m.ClusterVIP, macString(src))}
		}
		if badTag {
			return []Event{problem(at, m.HostID, "table chunk claiming host %d with a tag that does not verify from %s", m.HostID, macString(src))}
		}
		a.chunk(m)
		return []Event{{Time: at, Kind: "chunk", Host: m.HostID, Verified: verified,
			Text: fmt.Sprintf("host %d table %d chunk %d of epoch %d%s", m.HostID, m.Table, m.Chunk, m.Epoch, verifiedNote(a.Keys, verified))}}
	}
	return nil
}

// chunk assembles captured tables: once every chunk of every table of an
// epoch is in, they are the tables the capture annotates flows with.
func (a *Analyzer) chunk(c *heartbeat.TableChunk) {
	if a.Config == nil {
		return
	}
	n := len(a.Config.Rules) + 1
	cs := a.chunks[c.Epoch]
	if cs == nil {
		cs = &chunkSet{got: map[[2]uint8]bool{}}
		a.chunks[c.Epoch] = cs
	}
	t := int(c.Table)
	if t >= n {
		return
	}
	if t == n-1 {
		t = filter.DefaultRule
	}
	if cs.tables[t] == nil {
		cs.tables[t] = new(filter.Table)
	}
	copy(cs.tables[t][int(c.Chunk)*heartbeat.ChunkLen:], c.Owners[:])
	cs.got[[2]uint8{c.Table, c.Chunk}] = true
	if len(cs.got) == n*(filter.Buckets/heartbeat.ChunkLen) && c.Epoch >= a.epoch {
		tabs := cs.tables
		a.tables, a.modelOf = &tabs, ""
	}
}

func (a *Analyzer) arp(at time.Time, p *layers.ARP) []Event {
	if len(p.DstProtAddress) != 4 || len(p.SourceProtAddress) != 4 {
		return nil
	}
	spa, tpa := netip.AddrFrom4([4]byte(p.SourceProtAddress)), netip.AddrFrom4([4]byte(p.DstProtAddress))
	switch {
	case p.Operation == layers.ARPRequest && a.ourVIP(tpa) && len(a.VIPs) > 0:
		return []Event{{Time: at, Kind: "arp", Text: fmt.Sprintf("who has %s? tell %s", tpa, spa)}}
	case p.Operation == layers.ARPReply && a.ourVIP(spa) && len(a.VIPs) > 0:
		return []Event{{Time: at, Kind: "arp", Text: fmt.Sprintf("%s is at %s", spa, macString([6]byte(p.SourceHwAddress)))}}
	}
	return nil
}

// ndp shows neighbour discovery for IPv6 VIPs (the IPv6 counterpart of
// ARP).
func (a *Analyzer) ndp(at time.Time, p gopacket.Packet) []Event {
	if ns, ok := p.Layer(layers.LayerTypeICMPv6NeighborSolicitation).(*layers.ICMPv6NeighborSolicitation); ok {
		if t, ok := netip.AddrFromSlice(ns.TargetAddress); ok && len(a.VIPs) > 0 && a.ourVIP(t) {
			return []Event{{Time: at, Kind: "ndp", Text: fmt.Sprintf("neighbour solicitation for %s", t)}}
		}
	}
	if na, ok := p.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement); ok {
		if t, ok := netip.AddrFromSlice(na.TargetAddress); ok && len(a.VIPs) > 0 && a.ourVIP(t) {
			for _, o := range na.Options {
				if o.Type == layers.ICMPv6OptTargetAddress && len(o.Data) >= 6 {
					return []Event{{Time: at, Kind: "ndp", Text: fmt.Sprintf("%s is at %s", t, macString([6]byte(o.Data[:6])))}}
				}
			}
			return []Event{{Time: at, Kind: "ndp", Text: fmt.Sprintf("neighbour advertisement for %s", t)}}
		}
	}
	return nil
}

func (a *Analyzer) ip(at time.Time, src [6]byte, p gopacket.Packet) []Event {
	var dst, from netip.Addr
	if ip, ok := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4); ok {
		dst, from = netip.AddrFrom4([4]byte(ip.DstIP.To4())), netip.AddrFrom4([4]byte(ip.SrcIP.To4()))
	} else {
		ip6 := p.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
		dst, from = netip.AddrFrom16([16]byte(ip6.DstIP.To16())), netip.AddrFrom16([16]byte(ip6.SrcIP.To16()))
	}
	flowKey := func(c netip.Addr, cport uint16, v netip.Addr, vport uint16, proto string) string {
		return fmt.Sprintf("%s -> %s/%s", netip.AddrPortFrom(c, cport), netip.AddrPortFrom(v, vport), proto)
	}
	var proto string
	var sport, dport uint16
	var syn, synAck bool
	switch {
	case p.Layer(layers.LayerTypeTCP) != nil:
		t := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		proto, sport, dport, syn, synAck = "tcp", uint16(t.SrcPort), uint16(t.DstPort), t.SYN && !t.ACK, t.SYN && t.ACK
	case p.Layer(layers.LayerTypeUDP) != nil:
		u := p.Layer(layers.LayerTypeUDP).(*layers.UDP)
		proto, sport, dport = "udp", uint16(u.SrcPort), uint16(u.DstPort)
	default:
		return nil
	}
	if len(a.VIPs) == 0 || proto == "udp" && a.remoteControl(dst, dport, from, sport) {
		return nil // remote control: every host answers, by design
	}
	switch {
	case slices.Contains(a.VIPs, dst): // client -> VIP
		key := flowKey(from, sport, dst, dport, proto)
		f := a.flows[key]
		fresh := f == nil || syn && len(f.answered) > 0
		if fresh {
			// A new flow, or a later connection on a reused port.
			f = &flowSeen{key: key}
			a.flows[key] = f
		}
		if o := a.owner(p.Data()); o != 0 {
			f.owner = o
		} else if fresh && a.Lookup != nil && (syn || proto == "udp") {
			a.lookup(f, Flow{Client: netip.AddrPortFrom(from, sport), VIP: netip.AddrPortFrom(dst, dport), Proto: proto}, p.Data())
		}
		if !syn && proto == "tcp" {
			return nil
		}
		text := key
		if f.owner != 0 {
			text += fmt.Sprintf(": host %d takes it", f.owner)
		}
		return []Event{{Time: at, Kind: "flow", Flow: key, Owner: f.owner, Text: text}}
	case slices.Contains(a.VIPs, from): // VIP -> client: an answer
		key := flowKey(dst, dport, from, sport, proto)
		host, known := a.macHost[src]
		if !known {
			return nil // not a cluster host's frame we can name
		}
		f := a.flows[key]
		if f == nil {
			f = &flowSeen{key: key}
			a.flows[key] = f
		}
		var out []Event
		if !slices.Contains(f.answered, host) {
			f.answered = append(f.answered, host)
			slices.Sort(f.answered)
			if synAck || proto == "udp" {
				f.opened = append(f.opened, host)
				out = append(out, Event{Time: at, Kind: "answer", Flow: key, Host: host, Owner: f.owner, Text: fmt.Sprintf("%s answered by host %d", key, host)})
			}
		}
		if len(f.answered) > 1 && !f.twice {
			f.twice = true
			out = append(out, Event{Time: at, Kind: "problem", Flow: key, Hosts: slices.Clone(f.answered),
				Text: fmt.Sprintf("%s answered by %d hosts: %s", key, len(f.answered), idsText(f.answered))})
		}
		if synAck || proto == "udp" {
			out = append(out, a.checkOwner(at, f, host)...)
		}
		return out
	}
	return nil
}

// remoteControl reports whether a UDP datagram is remote control (to or
// from a VIP's remote-control port), which every host answers.
func (a *Analyzer) remoteControl(dst netip.Addr, dport uint16, src netip.Addr, sport uint16) bool {
	return remoteControl(a.Config, a.VIPs, dst, dport, src, sport)
}

// remoteControl: the remote-control port is r's (the default without a
// configuration; none when r turns remote control off).
func remoteControl(r *config.Resolved, vips []netip.Addr, dst netip.Addr, dport uint16, src netip.Addr, sport uint16) bool {
	port := uint16(remote.DefaultPort)
	if r != nil {
		if port = r.RemotePort; port == 0 {
			return false
		}
	}
	return slices.Contains(vips, dst) && dport == port || slices.Contains(vips, src) && sport == port
}

// owner is the host the tables say takes frame (0: unknown): captured
// tables when a whole epoch's were seen, else the members' model.
func (a *Analyzer) owner(frame []byte) uint8 {
	if a.Config == nil {
		return 0
	}
	hosts := map[uint8][]filter.RuleSetting{}
	var sig strings.Builder
	for _, id := range sortedKeys(a.hosts) {
		h := a.hosts[id]
		if h.hb == nil || !convergence.State(h.hb.State).Active() {
			continue
		}
		hosts[id] = convergence.ToSettings(h.hb.Rules, len(a.Config.Rules))
		fmt.Fprintf(&sig, "%d%v;", id, hosts[id])
	}
	if len(hosts) == 0 || a.tables == nil && !a.AssumeFormed {
		return 0
	}
	if a.model == nil || a.modelOf != sig.String() {
		if a.tables != nil {
			a.model = NewModelFrom(a.Config, a.tables, hosts)
		} else {
			a.model = NewModel(a.Config, hosts)
		}
		a.modelOf = sig.String()
	}
	if t := Takers(a.model.Decide(frame)); len(t) == 1 {
		return t[0]
	}
	return 0
}

func verifiedNote(keys heartbeat.Keyring, ok bool) string {
	switch {
	case len(keys) == 0:
		return " (unverified: no key)"
	case ok:
		return " verified"
	}
	return ""
}

func idList(v uint64) string {
	var ids []uint8
	for id := uint8(1); id <= filter.MaxHostID; id++ {
		if v&(1<<(id-1)) != 0 {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return "-"
	}
	return idsText(ids)
}

func idsText(ids []uint8) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(id)
	}
	return strings.Join(s, ",")
}

func macString(m [6]byte) string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

func sortedKeys[V any](m map[uint8]V) []uint8 {
	out := make([]uint8, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
