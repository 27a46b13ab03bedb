//go:build linux

package bench

import "testing"

// TestParseShares: perf report's lines are sorted into the soaker's loop
// (not busy), idle, nlb's programs and helpers, the agent, and the rest.
func TestParseShares(t *testing.T) {
	const rep = `# comment
 100        |   900:bench.test     |[vdso]                               |[.] __vdso_clock_gettime
 50         |   900:bench.test     |bench.test                           |[.] github.com/x.soak
 7          |   900:bench.test     |[kernel.kallsyms]                    |[k] __netif_receive_skb_core
 5          |     0:swapper        |[kernel.kallsyms]                    |[k] default_idle
 3          |     0:swapper        |[kernel.kallsyms]                    |[k] net_rx_action
 11         |   900:bench.test     |bpf_prog_6f8c30b87819da94_nlb_ingress|[k] bpf_prog_6f8c30b87819da94_nlb_ingress
 2          |   901:bench.test     |[kernel.kallsyms]                    |[k] bpf_ktime_get_ns
 4          |    24:ksoftirqd/1    |bpf_prog_e36dc8ba51fdaeb7_nlb_egress |[k] bpf_prog_e36dc8ba51fdaeb7_nlb_egress
 6          |   777:nlbt-nlbd      |nlbt-nlbd                            |[.] runtime.futex
 1          |   777:nlbt-nlbd      |[kernel.kallsyms]                    |[k] finish_task_switch.isra.0
 20         |   901:bench.test     |bench.test                           |[.] net/http.(*conn).serve
`
	got, err := parseShares(rep, []int{776, 777}, []int{900})
	if err != nil {
		t.Fatal(err)
	}
	want := cpuShares{ingress: 13, egress: 4, agent: 7, busy: 7 + 3 + 11 + 2 + 4 + 6 + 1 + 20}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if _, err := parseShares(" 3 | x | y\n", nil, nil); err == nil {
		t.Fatal("a line of 3 fields was accepted")
	}
	if _, err := parseShares("# nothing\n", nil, nil); err == nil {
		t.Fatal("a report without samples was accepted")
	}
}
