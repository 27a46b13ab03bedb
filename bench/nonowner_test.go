//go:build linux

// Package bench holds the namespace benchmarks of docs/benchmarks.md: they
// need root and build real topologies, so they live apart from the unit
// benchmarks of each package.
package bench

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/internal/netns"
)

var (
	hostIP   = netip.MustParseAddr("198.18.0.1")
	vip      = netip.MustParseAddr("198.18.0.100")
	clientIP = netip.MustParseAddr("198.18.0.200")
)

const floodPort = 5000 // no listener: the stack would drop it too

// xdpProg loads an XDP program from instructions (no clang needed).
func xdpProg(b testing.TB, insns asm.Instructions) *ebpf.Program {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.XDP, Instructions: insns, License: "MIT"})
	if err != nil {
		b.Fatalf("load XDP program: %v", err)
	}
	b.Cleanup(func() { p.Close() })
	return p
}

// cpuBusy is the busy time of all CPUs so far (/proc/stat: everything
// but idle and iowait), in USER_HZ ticks converted to a duration.
func cpuBusy(b testing.TB) time.Duration {
	f, err := os.Open("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	s.Scan()
	fields := strings.Fields(s.Text()) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range fields[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 && i < 8 {
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100
}

// floodTopo is a client namespace that floods a host namespace over one
// veth pair. The generator is an XDP program run with
// BPF_F_TEST_XDP_LIVE_FRAMES that redirects one frame out of the client's
// veth, so its own cost per packet is small and the host's receive path
// is what differs between variants.
type floodTopo struct {
	g, h     *netns.NS
	hIf      string
	hMAC     net.HardwareAddr
	gen      *ebpf.Program
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
	// An XDP_PASS program on the host's veth: veth only accepts
	// XDP-redirected frames when its peer runs XDP. Present in every
	// variant alike.
	pass := xdpProg(b, asm.Instructions{asm.Mov.Imm(asm.R0, 2), asm.Return()})
	if err := t.h.Do(func() error {
		l, err := link.AttachXDP(link.XDPOptions{Program: pass, Interface: t.hIfindex})
		if err == nil {
			b.Cleanup(func() { l.Close() })
		}
		return err
	}); err != nil {
		b.Fatalf("attach XDP pass: %v", err)
	}
	gl, err := t.g.Netlink(b).LinkByName(gIf)
	if err != nil {
		b.Fatal(err)
	}
	// r0 = bpf_redirect(ifindex of the client's veth, 0)
	t.gen = xdpProg(b, asm.Instructions{
		asm.Mov.Imm(asm.R1, int32(gl.Attrs().Index)),
		asm.Mov.Imm(asm.R2, 0),
		asm.FnRedirect.Call(),
		asm.Return(),
	})
	p := &filter.Packet{Src: clientIP, Dst: vip, Proto: 17, SPort: 40000, DPort: floodPort, Payload: make([]byte, 18)}
	t.frame = p.Frame()
	copy(t.frame[0:6], t.hMAC)
	copy(t.frame[6:12], gl.Attrs().HardwareAddr)
	return t
}

// flood sends n frames (dst MAC replaced if dst is not nil) and returns
// the CPU busy time and wall time it took, all CPUs together.
func (t *floodTopo) flood(b *testing.B, n uint32, dst net.HardwareAddr) (busy, wall time.Duration) {
	frame := slices.Clone(t.frame)
	if dst != nil {
		copy(frame[0:6], dst)
	}
	var runErr error
	err := t.g.Do(func() error {
		b0, w0 := cpuBusy(b), time.Now()
		_, runErr = t.gen.Run(&ebpf.RunOptions{Data: frame, Repeat: n, Flags: unix.BPF_F_TEST_XDP_LIVE_FRAMES})
		time.Sleep(50 * time.Millisecond) // let the host's softirq drain
		busy, wall = cpuBusy(b)-b0, time.Since(w0)-50*time.Millisecond
		return nil
	})
	if err != nil || runErr != nil {
		b.Fatalf("flood: %v %v", err, runErr)
	}
	return busy, wall
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
//   - gen-only: frames to another MAC, dropped at once (the generator's and
//     veth's own cost: the baseline);
//   - stack: no filter, the stack drops the datagram (no socket on the port);
//   - nftables: a CLUSTERIP-style rule in prerouting at raw priority,
//     `ip daddr VIP jhash ip saddr . udp sport mod 3 seed S != K drop`;
//   - nlb: the nlb TC ingress program, bucket owned by another host.
//
// Metrics: pps/core (packets per CPU-second, whole pipeline), ns/pkt (CPU
// per packet), rx-ns/pkt (minus the gen-only baseline: the host's receive
// and drop cost) and the ratio of nftables' to nlb's rx-ns/pkt.
func BenchmarkNonOwnerDrop(b *testing.B) {
	netns.RequireRoot(b)
	if _, err := exec.LookPath("nft"); err != nil {
		b.Fatal("nft not found (apt-get install nftables; make bench installs it)")
	}
	t := newFloodTopo(b)
	const n = 5_000_000
	const rounds = 3
	variants := []string{"gen-only", "stack", "nftables", "nlb"}
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
		"nlb": func() func() {
			var d *filter.Datapath
			err := t.h.Do(func() error {
				var err error
				if d, err = filter.Load(filter.DatapathOptions{}); err != nil {
					return err
				}
				st := &filter.State{VIPs: []netip.Addr{vip}, Seed: filter.Seed{5}, LeaseValid: true,
					Rules: []filter.PortRule{{StartPort: floodPort, EndPort: floodPort, Protocol: filter.ProtoUDP, Mode: filter.ModeMultiple, Affinity: filter.AffinityNone}}}
				st.Marks[0] = new(filter.Marks) // every bucket: another host's
				if err := d.Update(st, filter.Egress{}); err != nil {
					return err
				}
				return d.Attach(t.hIfindex)
			})
			if err != nil {
				b.Fatalf("nlb data plane: %v", err)
			}
			return func() { d.Detach(); d.Close() }
		},
	}
	b.ResetTimer()
	for range b.N {
		for r := 0; r < rounds; r++ {
			for _, v := range variants {
				teardown := setup[v]()
				var dst net.HardwareAddr
				if v == "gen-only" {
					dst = net.HardwareAddr{0x02, 0xee, 0, 0, 0, 1}
				}
				before := t.udpNoPorts(b)
				busy, wall := t.flood(b, n, dst)
				if v == "stack" && t.udpNoPorts(b)-before < n*9/10 {
					b.Fatalf("stack variant: only %d of %d datagrams reached UDP", t.udpNoPorts(b)-before, n)
				}
				if v != "stack" && v != "gen-only" && t.udpNoPorts(b)-before != 0 {
					b.Fatalf("%s variant: %d datagrams reached UDP, want 0 (all dropped earlier)", v, t.udpNoPorts(b)-before)
				}
				teardown()
				nsPer[v] = append(nsPer[v], float64(busy.Nanoseconds())/n)
				b.Logf("round %d %-9s %.0f ns/pkt, %.2f Mpps wall", r, v, float64(busy.Nanoseconds())/n, n/wall.Seconds()/1e6)
			}
		}
	}
	b.StopTimer()
	med := func(v string) float64 { s := slices.Clone(nsPer[v]); slices.Sort(s); return s[len(s)/2] }
	base := med("gen-only")
	for _, v := range variants {
		b.ReportMetric(1e9/med(v), v+"-pps/core")
		if v != "gen-only" {
			b.ReportMetric(med(v)-base, v+"-rx-ns/pkt")
		}
	}
	b.ReportMetric((med("nftables")-base)/(med("nlb")-base), "nft/nlb-rx-cost")
	b.ReportMetric(med("nftables")/med("nlb"), "nlb/nft-pps")
	b.ReportMetric(0, "ns/op")
}

func nft(rules string) error {
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}
