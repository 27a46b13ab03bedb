//go:build linux

// Package bench holds the namespace benchmarks of docs/benchmarks.md: they
// need root and build real topologies, so they live apart from the unit
// benchmarks of each package.
package bench

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/filter/datapath"
	"github.com/nlbproject/nlb/internal/netns"
)

var (
	hostIP   = netip.MustParseAddr("198.18.0.1")
	vip      = netip.MustParseAddr("198.18.0.100")
	clientIP = netip.MustParseAddr("198.18.0.200")
)

const floodPort = 5000 // no listener: the stack would drop it too

// txRing is a PACKET_TX_RING (TPACKET_V2) sender: the frames of a batch
// are written into a ring shared with the kernel once, and one sendto(2)
// transmits them all, so the generator's own cost per packet is small
// and the same in every variant. (The generator used to be an XDP program
// run with BPF_F_TEST_XDP_LIVE_FRAMES; kernels that refuse that flag with
// EPERM, as this machine kind's does since 2026-12, made it unusable.)
type txRing struct {
	fd   int
	ring []byte
	to   *unix.SockaddrLinklayer
	head int // the next frame the kernel will look at: it walks the ring in order
}

const (
	txFrameSize = 2048
	txFrames    = 512
	tpHdrLen    = 32 // TPACKET_ALIGN(sizeof(struct tpacket2_hdr)): the frame's data follows
)

// newTxRing opens the sender on ifindex. It runs inside netns.Do, on
// another goroutine than the benchmark's, so it returns errors rather
// than failing b itself.
func newTxRing(b testing.TB, ifindex int) (*txRing, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0) // protocol 0: never receives
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	// PACKET_VNET_HDR: each frame starts with a virtio-net header whose
	// hdr_len (the whole frame) is what the kernel copies into the
	// buffer's linear part. Without it a TX ring sends the frame past the
	// Ethernet header as page fragments of the ring (zero copy), and the
	// receiver's headers are not in the linear part: every filter that
	// reads them must pull them first (nlb's program, ip_rcv), a cost a
	// NIC's receive path does not have (drivers put the headers in the
	// linear part).
	for _, o := range [][2]int{{unix.PACKET_VERSION, unix.TPACKET_V2}, {unix.PACKET_QDISC_BYPASS, 1}, {unix.PACKET_VNET_HDR, 1}} {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, o[0], o[1]); err != nil {
			return nil, fmt.Errorf("setsockopt %d: %w", o[0], err)
		}
	}
	req := &unix.TpacketReq{Block_size: txFrameSize * 32, Block_nr: txFrames / 32, Frame_size: txFrameSize, Frame_nr: txFrames}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, req); err != nil {
		return nil, fmt.Errorf("PACKET_TX_RING: %w", err)
	}
	ring, err := unix.Mmap(fd, 0, txFrameSize*txFrames, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap the TX ring: %w", err)
	}
	b.Cleanup(func() { unix.Munmap(ring) })
	proto := uint16(unix.ETH_P_IP)
	return &txRing{fd: fd, ring: ring, to: &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: proto<<8 | proto>>8}}, nil
}

func (r *txRing) status(i int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.ring[i*txFrameSize]))
}

// kick asks the kernel to transmit every frame marked for sending and
// waits until it has (a full queue, ENOBUFS, leaves some for the next).
func (r *txRing) kick() error {
	if err := unix.Sendto(r.fd, nil, 0, r.to); err != nil && err != unix.ENOBUFS {
		return fmt.Errorf("sendto: %w", err)
	}
	return nil
}

// vnetHdrLen is struct virtio_net_hdr's size: flags u8, gso_type u8,
// hdr_len u16, gso_size u16, csum_start u16, csum_offset u16.
const vnetHdrLen = 10

// send transmits frame n times, up to a full ring per sendto(2).
func (r *txRing) send(frame []byte, n uint32) error {
	for i := range txFrames {
		f := r.ring[i*txFrameSize:]
		binary.NativeEndian.PutUint32(f[4:8], uint32(vnetHdrLen+len(frame))) // tp_len
		v := f[tpHdrLen : tpHdrLen+vnetHdrLen]
		clear(v)                                                  // no checksum offload, no GSO
		binary.LittleEndian.PutUint16(v[2:4], uint16(len(frame))) // hdr_len: all of it linear
		copy(f[tpHdrLen+vnetHdrLen:], frame)
	}
	for left := int(n); left > 0; {
		batch := min(left, txFrames)
		for range batch {
			// A frame still marked from the last batch has not gone
			// out yet: kick again, a bounded number of times.
			st := r.status(r.head)
			for try := 0; atomic.LoadUint32(st) != unix.TP_STATUS_AVAILABLE; try++ {
				if v := atomic.LoadUint32(st); v&unix.TP_STATUS_WRONG_FORMAT != 0 || try == 1000 {
					return fmt.Errorf("TX ring frame %d stuck with status %#x", r.head, v)
				}
				if err := r.kick(); err != nil {
					return err
				}
			}
			atomic.StoreUint32(st, unix.TP_STATUS_SEND_REQUEST)
			r.head = (r.head + 1) % txFrames
		}
		if err := r.kick(); err != nil {
			return err
		}
		left -= batch
	}
	return nil
}

// threadCPU is the CPU time this thread has run, exactly (schedstat, in
// ns); ksoftirqd is that of the kernel threads that run the softirqs the
// sender's own context did not: together, all the CPU a flood costs.
func threadCPU() (time.Duration, error) {
	return schedstat("/proc/thread-self/schedstat")
}

func ksoftirqd() (time.Duration, error) {
	var sum time.Duration
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		if comm, err := os.ReadFile(d + "/comm"); err == nil && strings.HasPrefix(string(comm), "ksoftirqd/") {
			v, err := schedstat(d + "/schedstat")
			if err != nil {
				return 0, err
			}
			sum += v
		}
	}
	return sum, nil
}

// cpuNow is threadCPU plus ksoftirqd.
func cpuNow() (time.Duration, error) {
	c, err := threadCPU()
	if err != nil {
		return 0, err
	}
	k, err := ksoftirqd()
	return c + k, err
}

func schedstat(path string) (time.Duration, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.Fields(string(raw))[0], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return time.Duration(ns), nil
}

// floodTopo is a client namespace that floods a host namespace over one
// veth pair from a TX ring. Sending runs the host's receive path in the
// sender's own context (veth hands the frame to the backlog and the
// softirq runs when the sender re-enables bottom halves), so the
// sender's CPU time plus ksoftirqd's is the whole cost of a packet, and
// the variants differ only in the host's receive path.
type floodTopo struct {
	g, h     *netns.NS
	hIf      string
	hMAC     net.HardwareAddr
	tx       *txRing
	frame    []byte
	hIfindex int
}

func newFloodTopo(b *testing.B) *floodTopo {
	t := &floodTopo{g: netns.New(b, "g"), h: netns.New(b, "h")}
	gIf := netns.Prefix + "g"
	t.hIf = netns.Prefix + "h"
	netns.Veth(b, t.g, gIf, clientIP.String()+"/24", t.h, t.hIf, hostIP.String()+"/24")
	hh := t.h.Netlink(b)
	hl, err := hh.LinkByName(t.hIf)
	if err != nil {
		b.Fatal(err)
	}
	netns.Addr(b, hh, hl, vip.String()+"/32")
	t.hMAC, t.hIfindex = hl.Attrs().HardwareAddr, hl.Attrs().Index
	netns.WaitOperUp(b, hh, t.hIf)
	gl, err := t.g.Netlink(b).LinkByName(gIf)
	if err != nil {
		b.Fatal(err)
	}
	if err := t.g.Do(func() (err error) { t.tx, err = newTxRing(b, gl.Attrs().Index); return err }); err != nil {
		b.Fatal(err)
	}
	p := &filter.Packet{Src: clientIP, Dst: vip, Proto: 17, SPort: 40000, DPort: floodPort, Payload: make([]byte, 18)}
	t.frame = p.Frame()
	copy(t.frame[0:6], t.hMAC)
	copy(t.frame[6:12], gl.Attrs().HardwareAddr)
	return t
}

// flood sends n frames (dst MAC replaced if dst is not nil) and returns
// the CPU time it took.
func (t *floodTopo) flood(b *testing.B, n uint32, dst net.HardwareAddr) (cpu time.Duration) {
	frame := slices.Clone(t.frame)
	if dst != nil {
		copy(frame[0:6], dst)
	}
	err := t.g.Do(func() error {
		c0, err := cpuNow()
		if err != nil {
			return err
		}
		if err := t.tx.send(frame, n); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond) // let any deferred softirq finish
		c1, err := cpuNow()
		cpu = c1 - c0
		return err
	})
	if err != nil {
		b.Fatalf("flood: %v", err)
	}
	return cpu
}

// udpNoPorts reads the host namespace's UDP NoPorts counter.
func (t *floodTopo) udpNoPorts(b *testing.B) int64 {
	var v int64
	t.h.Do(func() error {
		raw, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(raw), "\n") {
			if !strings.HasPrefix(line, "Udp: ") {
				continue
			}
			f := strings.Fields(line)[1:]
			if names == nil {
				names = f
				continue
			}
			for i, name := range names {
				if name == "NoPorts" {
					v, _ = strconv.ParseInt(f[i], 10, 64)
				}
			}
		}
		return nil
	})
	return v
}

// BenchmarkNonOwnerDrop floods a host that owns none of the flow's
// buckets and measures what dropping costs it, in one topology and one
// run, for four variants:
//
//   - gen-only: frames to another MAC, which the host discards as not
//     its own at the IP layer's door (the generator's, veth's and the
//     common receive path's cost: the baseline);
//   - stack: no filter, the stack drops the datagram (no socket on the port);
//   - nftables: a CLUSTERIP-style rule in prerouting at raw priority,
//     `ip daddr VIP jhash ip saddr . udp sport mod 3 seed S != K drop`;
//   - nlb: the nlb TC ingress program, bucket owned by another host;
//
// and three references for the floor of a drop:
//
//   - tc-drop: a trivial TCX ingress program that returns TC_ACT_SHOT;
//   - xdp-native, xdp-generic: a trivial XDP_DROP program on the veth, in
//     driver (veth's native XDP) and generic mode.
//
// Metrics: pps/core (packets per CPU-second, whole pipeline), rx-ns/pkt
// (CPU per packet minus the gen-only baseline: the host's receive and
// drop cost), nlb's and nftables' cost over the tc-drop floor, the ratio
// of the two, and (liveRunTimes) nlb's program's own live run time over
// the trivial one's.
func BenchmarkNonOwnerDrop(b *testing.B) {
	netns.RequireRoot(b)
	if _, err := exec.LookPath("nft"); err != nil {
		b.Fatal("nft not found (apt-get install nftables; make bench installs it)")
	}
	t := newFloodTopo(b)
	const n = 2_000_000
	const rounds = 8 // each variant runs twice in each position of a round
	variants := []string{"gen-only", "stack", "nftables", "nlb", "tc-drop", "xdp-native", "xdp-generic"}
	nsPer := map[string][]float64{}
	setup := map[string]func() func(){
		"gen-only": func() func() { return func() {} },
		"stack":    func() func() { return func() {} },
		"nftables": func() func() {
			// This host's index K is one the flood's flow does not hash to,
			// as on a non-owner: try each until the probe is dropped.
			del := func() { t.h.Do(func() error { return exec.Command("nft", "delete", "table", "ip", "nlbbench").Run() }) }
			for k := 0; k < 3; k++ {
				rules := fmt.Sprintf(`table ip nlbbench {
	chain pre {
		type filter hook prerouting priority raw; policy accept;
		ip daddr %s jhash ip saddr . udp sport mod 3 seed 0x5 != %d counter drop
	}
}`, vip, k)
				if err := t.h.Do(func() error { return nft(rules) }); err != nil {
					b.Fatalf("nft: %v", err)
				}
				before := t.udpNoPorts(b)
				t.flood(b, 1000, nil)
				if t.udpNoPorts(b) == before {
					return del
				}
				del()
			}
			b.Fatal("nftables: no host index drops the flood's flow")
			return nil
		},
		"nlb": func() func() { _, detach := t.attachNLB(b); return detach },
	}
	for name, mode := range map[string]link.XDPAttachFlags{"xdp-native": link.XDPDriverMode, "xdp-generic": link.XDPGenericMode} {
		setup[name] = func() func() { return t.attachTrivial(b, ebpf.XDP, 1 /* XDP_DROP */, mode) }
	}
	setup["tc-drop"] = func() func() { return t.attachTrivial(b, ebpf.SchedCLS, 2 /* TC_ACT_SHOT */, 0) }
	t.flood(b, n, nil) // warm up: the first floods of a fresh topology run slower
	b.ResetTimer()
	for range b.N {
		for r := 0; r < rounds; r++ {
			// Rotate the order each round so that a drift in the
			// machine's speed favours no variant.
			order := append(slices.Clone(variants[r%len(variants):]), variants[:r%len(variants)]...)
			for _, v := range order {
				teardown := setup[v]()
				var dst net.HardwareAddr
				if v == "gen-only" {
					dst = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}
				}
				before := t.udpNoPorts(b)
				busy := t.flood(b, n, dst)
				if v == "stack" && t.udpNoPorts(b)-before < n*9/10 {
					b.Fatalf("stack variant: only %d of %d datagrams reached UDP", t.udpNoPorts(b)-before, n)
				}
				if v != "stack" && v != "gen-only" && t.udpNoPorts(b)-before != 0 {
					b.Fatalf("%s variant: %d datagrams reached UDP, want 0 (all dropped earlier)", v, t.udpNoPorts(b)-before)
				}
				teardown()
				nsPer[v] = append(nsPer[v], float64(busy.Nanoseconds())/n)
			}
		}
	}
	b.StopTimer()
	live := t.liveRunTimes(b, n)
	// The least CPU a packet took in any round: interference from the
	// rest of a shared machine (steal, cache) only ever adds to it.
	best := func(v string) float64 { return slices.Min(nsPer[v]) }
	for _, v := range variants {
		b.Logf("%-9s ns/pkt by round: %.0f", v, nsPer[v])
	}
	base := best("gen-only")
	for _, v := range variants {
		b.ReportMetric(1e9/best(v), v+"-pps/core")
		if v != "gen-only" {
			b.ReportMetric(best(v)-base, v+"-rx-ns/pkt")
		}
	}
	// The noise of this machine: how far apart the baseline's rounds are.
	b.ReportMetric(100*(slices.Max(nsPer["gen-only"])-base)/base, "gen-only-spread-%")
	floor := best("tc-drop")
	b.ReportMetric(best("nlb")-floor, "nlb-over-floor-ns/pkt")
	b.ReportMetric(best("nftables")-floor, "nftables-over-floor-ns/pkt")
	for v, ns := range live {
		b.ReportMetric(ns, v+"-live-ns/run")
	}
	// The program's own live cost over the trivial one: the kernel's
	// statistics time each run alone, so the machine's noise between
	// floods (tens of ns a packet, see the spread) does not enter it.
	liveOver := live["nlb"] - live["tc-drop"]
	b.ReportMetric(liveOver, "nlb-live-over-floor-ns/pkt")
	// nftables' cost over the floor can only be had from whole floods;
	// nlb's is there the larger of the two measures (its program's run
	// time is a lower bound of what it adds), so that noise which makes
	// nlb's flood look cheap never flatters the ratio.
	b.ReportMetric((best("nftables")-floor)/max(best("nlb")-floor, liveOver), "nft/nlb-over-floor")
	b.ReportMetric(best("nftables")/best("nlb"), "nlb/nft-pps")
	b.ReportMetric(0, "ns/op")
}

// liveRunTimes floods nlb's program and the trivial TC drop once more
// each with the kernel's program statistics on, and returns each
// program's own mean run time per packet on these live packets
// (run_time_ns / run_cnt; the statistics' two clock reads per run are
// outside the measured interval but the same for both), least of 3, and
// for reference nlb's accept path (every bucket this host's).
func (t *floodTopo) liveRunTimes(b *testing.B, n uint32) map[string]float64 {
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		b.Fatalf("enable eBPF run-time statistics: %v", err)
	}
	defer stats.Close()
	var owned filter.Marks
	for i := range owned {
		owned[i] = filter.MarkOwned
	}
	nlb := func(marks *filter.Marks) func() (func() (*ebpf.ProgramStats, error), func()) {
		return func() (func() (*ebpf.ProgramStats, error), func()) {
			d, detach := t.attachNLBMarks(b, marks)
			return d.IngressStats, detach
		}
	}
	variants := []struct {
		name   string
		count  uint32
		attach func() (func() (*ebpf.ProgramStats, error), func())
	}{
		{"nlb", n, nlb(new(filter.Marks))},
		{"tc-drop", n, func() (func() (*ebpf.ProgramStats, error), func()) {
			detach, prog := t.attachTrivialProg(b, ebpf.SchedCLS, 2, 0)
			return prog.Stats, detach
		}},
		{"nlb-accept", n / 4, nlb(&owned)},
	}
	out := map[string]float64{}
	for range 3 {
		for _, v := range variants {
			read, detach := v.attach()
			t.flood(b, v.count, nil)
			st, err := read()
			detach()
			if err != nil || st.RunCount < uint64(v.count) {
				b.Fatalf("%s program statistics: %+v (want >= %d runs), %v", v.name, st, v.count, err)
			}
			ns := float64(st.Runtime.Nanoseconds()) / float64(st.RunCount)
			if least, ok := out[v.name]; !ok || ns < least {
				out[v.name] = ns
			}
		}
	}
	return out
}

// attachNLB loads nlb's data plane into the host namespace, as a host
// that owns none of the flood's buckets, and attaches it to the veth.
func (t *floodTopo) attachNLB(b *testing.B) (*datapath.Datapath, func()) {
	return t.attachNLBMarks(b, new(filter.Marks)) // every bucket: another host's
}

// attachNLBMarks is attachNLB with this host's marks for the flood's rule.
func (t *floodTopo) attachNLBMarks(b *testing.B, marks *filter.Marks) (*datapath.Datapath, func()) {
	var d *datapath.Datapath
	err := t.h.Do(func() error {
		var err error
		if d, err = datapath.Load(datapath.DatapathOptions{}); err != nil {
			return err
		}
		st := &filter.State{VIPs: []netip.Addr{vip}, Seed: filter.Seed{5}, LeaseValid: true,
			Rules: []filter.PortRule{{StartPort: floodPort, EndPort: floodPort, Protocol: filter.ProtoUDP, Mode: filter.ModeMultiple, Affinity: filter.AffinityNone}}}
		st.Marks[0] = marks
		if err := d.Update(st, datapath.Egress{}); err != nil {
			return err
		}
		if err := d.RenewLease(time.Hour); err != nil {
			return err
		}
		return d.Attach(t.hIfindex)
	})
	if err != nil {
		b.Fatalf("nlb data plane: %v", err)
	}
	return d, func() { d.Detach(); d.Close() }
}

// attachTrivial attaches a program that only returns ret to the host's
// veth: TCX ingress for SchedCLS, XDP in mode for XDP. It returns the
// detach.
func (t *floodTopo) attachTrivial(b *testing.B, typ ebpf.ProgramType, ret int32, mode link.XDPAttachFlags) func() {
	detach, _ := t.attachTrivialProg(b, typ, ret, mode)
	return detach
}

// attachTrivialProg is attachTrivial that also returns the program.
func (t *floodTopo) attachTrivialProg(b *testing.B, typ ebpf.ProgramType, ret int32, mode link.XDPAttachFlags) (func(), *ebpf.Program) {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: typ, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, ret), asm.Return()}})
	if err != nil {
		b.Fatalf("trivial %v program: %v", typ, err)
	}
	var l link.Link
	err = t.h.Do(func() (err error) {
		if typ == ebpf.XDP {
			l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: t.hIfindex, Flags: mode})
		} else {
			l, err = link.AttachTCX(link.TCXOptions{Program: prog, Interface: t.hIfindex, Attach: ebpf.AttachTCXIngress})
		}
		return err
	})
	if err != nil {
		prog.Close()
		b.Fatalf("attach trivial %v program: %v", typ, err)
	}
	return func() { l.Close(); prog.Close() }, prog
}

func nft(rules string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
