//go:build linux

package datapath

import (
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"

	"github.com/cilium/ebpf"

	inetns "github.com/nlbproject/nlb/internal/netns"
)

// BenchmarkDatapath measures the ingress program per packet with
// BPF_PROG_TEST_RUN (the kernel repeats the run in a loop), against an
// empty TC program in the same harness. ns/pkt is the kernel's own
// per-repeat time; compare paths within one run (see docs/benchmarks.md).
func BenchmarkDatapath(b *testing.B) {
	inetns.RequireRoot(b)
	d, err := Load(DatapathOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()

	// Every kernel run happens on one thread locked into the benchmark's
	// namespace, where the real flow's sockets are: sub-benchmarks run on
	// goroutines of their own, so they hand their work to it.
	work := make(chan func())
	ready := make(chan *world)
	go func() {
		w := enterWorld(&testing.T{}, 8, 0) // real flows, for the retained path
		ready <- w
		for f := range work {
			f()
		}
	}()
	defer close(work)
	inWorld := func(f func()) {
		done := make(chan struct{})
		work <- func() { f(); close(done) }
		<-done
	}
	w := <-ready
	{
		k := w.flows[slices.IndexFunc(w.flows, func(k flowKey) bool { return k.vip.Addr().Is4() })]
		s := &filter.State{
			VIPs:       []netip.Addr{dVIP, dVIP2, d6VIP, d6VIP2},
			Rules:      []filter.PortRule{{StartPort: 80, EndPort: 80, Protocol: filter.ProtoTCP, Mode: filter.ModeMultiple, Affinity: filter.AffinityNone}, {StartPort: 443, EndPort: 443, Protocol: filter.ProtoTCP, Mode: filter.ModeMultiple, Affinity: filter.AffinityNone}},
			Seed:       filter.Seed{5},
			LeaseValid: true,
		}
		filter.SortRules(s.Rules)
		var none, owned, retained filter.Marks
		for i := range owned {
			owned[i], retained[i] = filter.MarkOwned, filter.MarkRetained
		}
		ri := 0
		for i, r := range s.Rules {
			if r.StartPort == k.vip.Port() {
				ri = i
			}
		}
		frames := []struct {
			name  string
			prog  *ebpf.Program
			marks *filter.Marks
			pkt   *filter.Packet
		}{
			{"noop", d.objs.NlbNoop, &owned, &filter.Packet{Src: k.client.Addr(), Dst: dVIP, Proto: 6, SPort: 1234, DPort: 80, TCPFlags: 0x02}},
			{"nonvip", d.objs.NlbIngress, &owned, &filter.Packet{Src: k.client.Addr(), Dst: dNonVIP, Proto: 6, SPort: 1234, DPort: 80, TCPFlags: 0x02}},
			{"drop", d.objs.NlbIngress, &none, &filter.Packet{Src: k.client.Addr(), Dst: dVIP, Proto: 6, SPort: 1234, DPort: 80, TCPFlags: 0x02}},
			{"accept", d.objs.NlbIngress, &owned, &filter.Packet{Src: k.client.Addr(), Dst: dVIP, Proto: 6, SPort: 1234, DPort: 80, TCPFlags: 0x10}},
			{"retained", d.objs.NlbIngress, &retained, &filter.Packet{Src: k.client.Addr(), Dst: k.vip.Addr(), Proto: 6, SPort: k.client.Port(), DPort: k.vip.Port(), TCPFlags: 0x10}},
			// IPv6: the second VIP of the list, no extension header, then
			// one destination options header.
			{"drop6", d.objs.NlbIngress, &none, &filter.Packet{Src: d6Clients[0], Dst: d6VIP2, Proto: 6, SPort: 1234, DPort: 80, TCPFlags: 0x02}},
			{"accept6", d.objs.NlbIngress, &owned, &filter.Packet{Src: d6Clients[0], Dst: d6VIP2, Proto: 6, SPort: 1234, DPort: 80, TCPFlags: 0x10}},
			{"accept6-ext", d.objs.NlbIngress, &owned, &filter.Packet{Src: d6Clients[0], Dst: d6VIP2, Proto: 6, SPort: 1234, DPort: 80, TCPFlags: 0x10, Ext6: []filter.Ext6{{Type: 60}}}},
		}
		for _, f := range frames {
			b.Run(f.name, func(b *testing.B) {
				st := *s
				st.Marks[ri] = f.marks
				if err := d.Update(&st, Egress{}); err != nil {
					b.Fatal(err)
				}
				d.setLease(math.MaxUint64)
				frame := f.pkt.Frame()
				want := filter.Decide(frame, &st, w.holds)
				var (
					got     filter.Decision
					per     time.Duration
					err     error
					benchEr error
				)
				inWorld(func() {
					got, err = d.testRun(frame)
					b.ResetTimer()
					_, per, benchEr = f.prog.Benchmark(frame, b.N, nil)
				})
				if f.name != "noop" && (err != nil || got != want) {
					b.Fatalf("%s: kernel %+v (%v), model %+v", f.name, got, err, want)
				}
				if benchEr != nil {
					b.Fatal(benchEr)
				}
				b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
				if f.name != "noop" {
					b.ReportMetric(0, "ns/op")
				}
			})
		}
		// The egress program in unicast mode: every frame the host sends
		// leaves with the cluster MAC as source, rewritten to the host's.
		b.Run("egress", func(b *testing.B) {
			frame := (&filter.Packet{Src: dVIP, Dst: k.client.Addr(), Proto: 6, SPort: 80, DPort: 1234, TCPFlags: 0x12}).Frame()
			eg := Egress{Mask: true, MaskedMAC: [6]byte{0x02, 0x01, 0xc6, 0x12, 0x00, 0x64}}
			copy(eg.ClusterMAC[:], frame[6:12])
			if err := d.Update(s, eg); err != nil {
				b.Fatal(err)
			}
			out := make([]byte, len(frame))
			if _, err := d.objs.NlbEgress.Run(&ebpf.RunOptions{Data: frame, DataOut: out}); err != nil {
				b.Fatal(err)
			}
			if [6]byte(out[6:12]) != eg.MaskedMAC {
				b.Fatalf("egress left source %x, want %x", out[6:12], eg.MaskedMAC)
			}
			b.ResetTimer()
			_, per, err := d.objs.NlbEgress.Benchmark(frame, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/pkt")
			b.ReportMetric(0, "ns/op")
		})
	}
}
