package datapath

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nlbproject/nlb/filter"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// MinKernel is the oldest kernel the data plane supports: it attaches with
// TCX links (Linux 6.6).
const MinKernel = "6.6"

// Egress configures the unicast-mode source-MAC masking of the egress
// program.
type Egress struct {
	// Mask enables the rewrite of ClusterMAC to MaskedMAC in source
	// addresses of outgoing frames.
	Mask       bool
	ClusterMAC [6]byte
	MaskedMAC  [6]byte
}

// DatapathOptions configures Load.
type DatapathOptions struct {
	// PinDir is a directory on a bpffs where the maps and links are pinned
	// and from which a restarted agent re-adopts them. Empty: nothing is
	// pinned and the data plane lives as long as the Datapath.
	PinDir string
}

// Datapath is the nlb eBPF data plane of one interface: the ingress
// decision, the egress MAC masking, their maps and links.
type Datapath struct {
	objs    nlbObjects
	pinDir  string
	adopted bool // the maps were pinned by a previous agent

	mu sync.Mutex // guards the fields below and serialises Update
	// ingress and egress are the TCX links, nil until attached.
	ingress, egress link.Link
	// flipped is when the active slot last changed; the slot that was
	// active then is rewritten only after slotQuiesce, long after any
	// packet that read it has finished.
	flipped time.Time
	closed  bool
}

// slotQuiesce is how long a state slot stays untouched after packets stop
// being steered to it. A packet holds a slot pointer for well under a
// microsecond (one program run, under RCU), so 2 ms is a wide margin.
const slotQuiesce = 2 * time.Millisecond

// Pin names inside PinDir.
const (
	pinIngressLink = "link_ingress"
	pinEgressLink  = "link_egress"
)

// Load loads the eBPF programs. With a PinDir, maps already pinned there
// are re-used with their contents (the tables and counters survive an agent
// restart) and missing ones are created and pinned.
func Load(opts DatapathOptions) (*Datapath, error) {
	spec, err := loadNlb()
	if err != nil {
		return nil, fmt.Errorf("load eBPF spec: %w", err)
	}
	var copts ebpf.CollectionOptions
	if opts.PinDir != "" {
		if err := os.MkdirAll(opts.PinDir, 0o700); err != nil {
			return nil, fmt.Errorf("create pin directory: %w", err)
		}
		for _, m := range spec.Maps {
			m.Pinning = ebpf.PinByName
		}
		copts.Maps.PinPath = opts.PinDir
	}
	d := &Datapath{pinDir: opts.PinDir}
	if opts.PinDir != "" {
		_, err := os.Stat(filepath.Join(opts.PinDir, "nlb_states"))
		d.adopted = err == nil
	}
	if err := spec.LoadAndAssign(&d.objs, &copts); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load eBPF programs: %+v", ve)
		}
		return nil, fmt.Errorf("load eBPF programs: %w", err)
	}
	return d, nil
}

// Attach attaches the ingress and egress programs to the interface with
// TCX. If links are pinned in PinDir (a previous agent's), the new programs
// replace the old ones in place: not a single packet goes unfiltered.
func (d *Datapath) Attach(ifindex int) (err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ingress != nil {
		return errors.New("attach: already attached")
	}
	var done []link.Link
	defer func() { // all or nothing
		if err != nil {
			for _, l := range done {
				if d.pinDir != "" {
					_ = l.Unpin()
				}
				_ = l.Close()
			}
		}
	}()
	for _, a := range []struct {
		prog   *ebpf.Program
		attach ebpf.AttachType
		pin    string
		dst    *link.Link
	}{
		{d.objs.NlbIngress, ebpf.AttachTCXIngress, pinIngressLink, &d.ingress},
		{d.objs.NlbEgress, ebpf.AttachTCXEgress, pinEgressLink, &d.egress},
	} {
		l, err := d.adoptOrAttach(ifindex, a.prog, a.attach, a.pin)
		if err != nil {
			return err
		}
		done = append(done, l)
		*a.dst = l
	}
	return nil
}

func (d *Datapath) adoptOrAttach(ifindex int, prog *ebpf.Program, at ebpf.AttachType, pin string) (link.Link, error) {
	if d.pinDir != "" {
		path := filepath.Join(d.pinDir, pin)
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			info, ierr := l.Info()
			if ierr == nil && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
				if err := l.Update(prog); err != nil {
					l.Close()
					return nil, fmt.Errorf("replace program in pinned link %s: %w", path, err)
				}
				return l, nil
			}
			// A stale pin (interface gone or different): drop it.
			_ = l.Unpin()
			l.Close()
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("load pinned link %s: %w", path, err)
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at})
	if err != nil {
		return nil, fmt.Errorf("attach tcx %s on ifindex %d: %w", at, ifindex, err)
	}
	if d.pinDir != "" {
		if err := l.Pin(filepath.Join(d.pinDir, pin)); err != nil {
			l.Close()
			return nil, fmt.Errorf("pin link: %w", err)
		}
	}
	return l, nil
}

// Update installs a new state (cluster configuration, marks) and egress
// setting atomically: it writes the inactive slot, then flips the active
// index, so a packet sees either the whole old or the whole new state.
func (d *Datapath) Update(s *filter.State, eg Egress) error {
	v, err := encodeState(s, eg)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var active uint32
	if err := d.objs.NlbActive.Lookup(uint32(0), &active); err != nil {
		return fmt.Errorf("read active slot: %w", err)
	}
	if wait := slotQuiesce - time.Since(d.flipped); wait > 0 {
		time.Sleep(wait)
	}
	next := (active + 1) & 1
	if err := d.objs.NlbStates.Put(next, v); err != nil {
		return fmt.Errorf("write state slot %d: %w", next, err)
	}
	if err := d.objs.NlbActive.Put(uint32(0), next); err != nil {
		return fmt.Errorf("activate state slot %d: %w", next, err)
	}
	d.flipped = time.Now()
	return nil
}

// ruleVIP6 is a rule's IPv4 VIP when its VIP is IPv6 (NLB_RULE_VIP6).
const ruleVIP6 = 0xffffffff

// encodeState converts the model's state to the kernel's layout. IPv4
// VIPs come before IPv6 ones (config orders them so).
func encodeState(s *filter.State, eg Egress) (*nlbNlbState, error) {
	if len(s.VIPs) > filter.MaxVIPs {
		return nil, fmt.Errorf("%d VIPs, at most %d", len(s.VIPs), filter.MaxVIPs)
	}
	if len(s.Rules) > filter.MaxRules {
		return nil, fmt.Errorf("%d rules, at most %d", len(s.Rules), filter.MaxRules)
	}
	v := new(nlbNlbState)
	v.Seed0 = binary.LittleEndian.Uint64(s.Seed[0:8])
	v.Seed1 = binary.LittleEndian.Uint64(s.Seed[8:16])
	vip6 := map[netip.Addr]uint8{} // 1 + index in Vips6
	for _, a := range s.VIPs {
		switch {
		case a.Is4() && len(vip6) > 0:
			return nil, fmt.Errorf("VIP %s after an IPv6 VIP: IPv4 VIPs come first", a)
		case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return nil, fmt.Errorf("VIP %s is the broadcast address", a)
		case a.Is4():
			b := a.As4()
			v.Vips[v.N_vips] = binary.NativeEndian.Uint32(b[:]) // network order in memory
			v.N_vips++
		case a.Is6() && !a.Is4In6():
			v.Vips6[v.N_vips6] = a.As16()
			v.N_vips6++
			vip6[a] = uint8(v.N_vips6)
		default:
			return nil, fmt.Errorf("VIP %s is neither IPv4 nor IPv6", a)
		}
	}
	v.N_rules = uint32(len(s.Rules))
	v.RemotePort = s.RemotePort
	for i, r := range s.Rules {
		kr := &v.Rules[i]
		switch {
		case r.AllVIPs():
		case r.VIP.Is4():
			b := r.VIP.As4()
			kr.Vip = binary.NativeEndian.Uint32(b[:])
		case vip6[r.VIP] != 0:
			kr.Vip, kr.Vip6 = ruleVIP6, vip6[r.VIP]
		default:
			return nil, fmt.Errorf("rule %s: its VIP is not one of the VIPs", r)
		}
		kr.PortLo, kr.PortHi = r.StartPort, r.EndPort
		kr.Proto, kr.Mode, kr.Affinity = uint8(r.Protocol), uint8(r.Mode), uint8(r.Affinity)
	}
	if s.Prefix6 > 128 {
		return nil, fmt.Errorf("IPv6 network prefix /%d: at most 128", s.Prefix6)
	}
	v.Net6MaskHi, v.Net6MaskLo = filter.Prefix6Masks(int(cmp.Or(s.Prefix6, filter.DefaultPrefix6)))
	for t, m := range s.Marks {
		if m != nil {
			for b, mark := range m {
				v.Marks[t][b] = uint8(mark)
			}
		}
	}
	if eg.Mask {
		v.MaskMac = 1
	}
	hb := s.HeartbeatBudget
	if hb.Interval < 0 || hb.Tolerance < 0 || hb.Stale < 0 || hb.OpenInterval < 0 || hb.OpenTolerance < 0 {
		return nil, fmt.Errorf("heartbeat budget %+v: negative duration", hb)
	}
	v.HbIntervalNs, v.HbToleranceNs, v.HbStaleNs = uint64(hb.Interval), uint64(hb.Tolerance), uint64(hb.Stale)
	v.HbOpenIntervalNs, v.HbOpenToleranceNs = uint64(hb.OpenInterval), uint64(hb.OpenTolerance)
	v.ClusterMac, v.MaskedMac = eg.ClusterMAC, eg.MaskedMAC
	return v, nil
}

// decodeState is the inverse of encodeState.
func decodeState(v *nlbNlbState) (*filter.State, Egress) {
	s := &filter.State{RemotePort: v.RemotePort, HeartbeatBudget: filter.HeartbeatBudget{
		Interval: time.Duration(v.HbIntervalNs), Tolerance: time.Duration(v.HbToleranceNs), Stale: time.Duration(v.HbStaleNs),
		OpenInterval: time.Duration(v.HbOpenIntervalNs), OpenTolerance: time.Duration(v.HbOpenToleranceNs)}}
	binary.LittleEndian.PutUint64(s.Seed[0:8], v.Seed0)
	binary.LittleEndian.PutUint64(s.Seed[8:16], v.Seed1)
	addr := func(x uint32) netip.Addr {
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], x)
		return netip.AddrFrom4(b)
	}
	for i := range min(int(v.N_vips), filter.MaxVIPs) {
		s.VIPs = append(s.VIPs, addr(v.Vips[i]))
	}
	for i := range min(int(v.N_vips6), filter.MaxVIPs) {
		s.VIPs = append(s.VIPs, netip.AddrFrom16(v.Vips6[i]))
	}
	s.Prefix6 = uint8(bits.OnesCount64(v.Net6MaskHi) + bits.OnesCount64(v.Net6MaskLo))
	for i := range min(int(v.N_rules), filter.MaxRules) {
		kr := &v.Rules[i]
		r := filter.PortRule{StartPort: kr.PortLo, EndPort: kr.PortHi, Protocol: filter.Protocol(kr.Proto), Mode: filter.Mode(kr.Mode), Affinity: filter.Affinity(kr.Affinity)}
		switch {
		case kr.Vip == ruleVIP6 && kr.Vip6 >= 1 && int(kr.Vip6) <= len(v.Vips6):
			r.VIP = netip.AddrFrom16(v.Vips6[kr.Vip6-1])
		case kr.Vip != 0:
			r.VIP = addr(kr.Vip)
		}
		s.Rules = append(s.Rules, r)
	}
	for t := range v.Marks {
		var m filter.Marks
		any := false
		for b, k := range v.Marks[t] {
			m[b] = filter.Mark(k)
			any = any || k != 0
		}
		if any {
			s.Marks[t] = &m
		}
	}
	return s, Egress{Mask: v.MaskMac != 0, ClusterMAC: v.ClusterMac, MaskedMAC: v.MaskedMac}
}

// Installed reads back the active state and the lease: what a restarted
// agent adopts. LeaseValid says whether the lease had time left, which is
// returned too (0 when expired).
func (d *Datapath) Installed() (*filter.State, Egress, time.Duration, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var active uint32
	if err := d.objs.NlbActive.Lookup(uint32(0), &active); err != nil {
		return nil, Egress{}, 0, fmt.Errorf("read active slot: %w", err)
	}
	var v nlbNlbState
	if err := d.objs.NlbStates.Lookup(active&1, &v); err != nil {
		return nil, Egress{}, 0, fmt.Errorf("read state slot %d: %w", active&1, err)
	}
	var until uint64
	if err := d.objs.NlbLease.Lookup(uint32(0), &until); err != nil {
		return nil, Egress{}, 0, fmt.Errorf("read lease: %w", err)
	}
	now, err := monotonicNow()
	if err != nil {
		return nil, Egress{}, 0, err
	}
	s, eg := decodeState(&v)
	var left time.Duration
	if time.Duration(until) > now {
		left = time.Duration(until) - now
	}
	s.LeaseValid = left > 0
	return s, eg, left, nil
}

// Adopted reports whether Load re-used maps pinned by a previous agent.
func (d *Datapath) Adopted() bool { return d.adopted }

// monotonicNow is CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns.
func monotonicNow() (time.Duration, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, err
	}
	return time.Duration(ts.Nano()), nil
}

// RenewLease lets this host take new flows in its buckets for d from now.
func (d *Datapath) RenewLease(dur time.Duration) error {
	now, err := monotonicNow()
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	return d.setLease(uint64(now + dur))
}

// BindHeartbeatSource binds host id's heartbeats to the Ethernet source
// mac, with a fresh budget (filter.HeartbeatSources.Bind): the agent
// calls it for the sources of heartbeats it admitted.
func (d *Datapath) BindHeartbeatSource(id uint8, mac [6]byte) error {
	if id == 0 || id > filter.MaxHostID {
		return fmt.Errorf("bind heartbeat source: host ID %d out of range", id)
	}
	now, err := monotonicNow()
	if err != nil {
		return fmt.Errorf("bind heartbeat source: %w", err)
	}
	v := nlbNlbHbSrc{Mac: mac, Verified: 1, Last: uint64(now)}
	if err := d.objs.NlbHbSources.Put(uint32(id), &v); err != nil {
		return fmt.Errorf("bind heartbeat source of host %d: %w", id, err)
	}
	return nil
}

// ExpireLease stops this host taking new flows at once (held flows go on).
func (d *Datapath) ExpireLease() error { return d.setLease(0) }

func (d *Datapath) setLease(until uint64) error {
	if err := d.objs.NlbLease.Put(uint32(0), until); err != nil {
		return fmt.Errorf("write lease: %w", err)
	}
	return nil
}

// Counters holds packet and byte counts per table (rule index,
// filter.DefaultRule, or NoTable for unfiltered classes) and reason.
type Counters struct {
	Packets, Bytes [filter.MaxRules + 2][filter.NumReasons]uint64
}

// NoTable is the Counters row for classes decided without a rule.
const NoTable = filter.MaxRules + 1

// Counters reads the per-CPU counters, summed over CPUs.
func (d *Datapath) Counters() (*Counters, error) {
	var c Counters
	var per []nlbNlbCount
	for t := range c.Packets {
		for r := range c.Packets[t] {
			if err := d.objs.NlbCounters.Lookup(uint32(t*filter.NumReasons+r), &per); err != nil {
				return nil, fmt.Errorf("read counters: %w", err)
			}
			for _, n := range per {
				c.Packets[t][r] += n.Packets
				c.Bytes[t][r] += n.Bytes
			}
		}
	}
	return &c, nil
}

// IngressStats is the ingress program's live run count and total run
// time, as the kernel counts them while statistics are enabled
// (ebpf.EnableStats or sysctl kernel.bpf_stats_enabled=1; zero
// otherwise).
func (d *Datapath) IngressStats() (*ebpf.ProgramStats, error) {
	st, err := d.objs.NlbIngress.Stats()
	if err != nil {
		return nil, fmt.Errorf("ingress program statistics: %w", err)
	}
	return st, nil
}

// Close releases this process's handles. Pinned links and maps stay in the
// kernel and keep filtering; without pins, the programs are detached.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	for _, l := range []link.Link{d.ingress, d.egress} {
		if l != nil {
			l.Close()
		}
	}
	return d.objs.Close()
}

// Detach removes the programs from the interface and deletes every pin,
// leaving the interface as it was before Attach, then closes the Datapath.
func (d *Datapath) Detach() error {
	d.mu.Lock()
	var errs []error
	for _, l := range []*link.Link{&d.ingress, &d.egress} {
		if *l == nil {
			continue
		}
		if d.pinDir != "" {
			if err := (*l).Unpin(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := (*l).Close(); err != nil {
			errs = append(errs, err)
		}
		*l = nil
	}
	if d.pinDir != "" {
		for _, m := range d.maps() {
			if err := m.m.Unpin(); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.Remove(d.pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove pin directory: %w", err))
		}
	}
	d.mu.Unlock()
	if err := d.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// skbCbOffset is offsetof(struct __sk_buff, cb): twelve __u32 fields
// precede it.
const skbCbOffset = 48

// skbCtxSize is large enough for struct __sk_buff; the kernel requires the
// bytes past its own struct to be zero.
const skbCtxSize = 256

// testRun runs the ingress program once on frame with BPF_PROG_TEST_RUN
// and returns its decision as recorded in skb->cb. The socket lookup runs
// in the calling thread's network namespace.
func (d *Datapath) testRun(frame []byte) (filter.Decision, error) {
	ctxIn := make([]byte, skbCtxSize)
	ctxOut := make([]byte, skbCtxSize)
	ret, err := d.objs.NlbIngress.Run(&ebpf.RunOptions{Data: frame, Context: ctxIn, ContextOut: ctxOut})
	if err != nil {
		return filter.Decision{}, err
	}
	cb := ctxOut[skbCbOffset:]
	reason := filter.Reason(binary.NativeEndian.Uint32(cb[0:4]))
	table := int(binary.NativeEndian.Uint32(cb[4:8]))
	bucket := int(binary.NativeEndian.Uint32(cb[8:12]))
	if table == NoTable {
		table = -1
	}
	if uint32(bucket) == math.MaxUint32 {
		bucket = -1
	}
	dec := filter.Decision{Verdict: reason.Verdict(), Reason: reason, Rule: table, Bucket: bucket}
	wantRet := uint32(0) // TC_ACT_OK
	if dec.Verdict == filter.Drop {
		wantRet = 2 // TC_ACT_SHOT
	}
	if ret != wantRet {
		return dec, fmt.Errorf("program returned %d for reason %v", ret, reason)
	}
	return dec, nil
}
