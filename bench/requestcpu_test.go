//go:build linux

package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// The two CPUs of BenchmarkRequestCPU: the clients, the switch and the
// test itself on one, the host (its backend, its agent, its softirqs) on
// the other.
const (
	cpuClient = 0
	cpuHost   = 1
)

// backendEnv makes the test binary an HTTP backend (TestMain): the value
// is the listen address. It answers like the cluster harness's backend.
const backendEnv = "NLB_BENCH_BACKEND"

func TestMain(m *testing.M) {
	if addr := os.Getenv(backendEnv); addr != "" {
		os.Exit(serveBackend(addr))
	}
	if path := os.Getenv(soakEnv); path != "" {
		os.Exit(soak(path))
	}
	os.Exit(m.Run())
}

func serveBackend(addr string) int {
	ln, err := net.Listen("tcp4", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "host 1\n")
	}), ReadHeaderTimeout: 5 * time.Second}
	srv.Serve(ln)
	return 0
}

// BenchmarkRequestCPU measures the CPU a short HTTP request (a new TCP
// connection, HTTP/1.0) costs the host that serves it, with and without
// nlb, at a fixed rate, so that what nlb adds is not lost in the noise
// of a saturated machine:
//
//   - the host (one namespace: its backend, a separate process; its
//     agent; its share of the packet processing) runs on one CPU and
//     everything else (the clients, the switch, this test) on the other:
//     processes are pinned, and receive packet steering (RPS) sends each
//     interface's receive processing to its side's CPU;
//   - a soaker thread of the lowest priority (SCHED_IDLE) spins on the
//     host's CPU and counts the time nothing else wanted it: the host's
//     CPU time is the wall time minus the soaker's minus steal, to the ns,
//     softirqs included;
//   - plain: the backend at the host's own address, no agent, no data
//     plane; nlb: the same backend through the VIP, the host the only
//     member of its cluster. Phases alternate in pairs (ABBA), each pair's
//     overhead is nlb's CPU per request over plain's; the report gives
//     the median pair and the spread.
//
// The agent's own CPU is measured apart (its process CPU clock) and
// reported both ways: nlb's overhead without it (the data path: programs,
// cluster MAC, VIP) and with it at this rate.
func BenchmarkRequestCPU(b *testing.B) {
	netns.RequireRoot(b)
	if runtime.NumCPU() < 2 {
		b.Fatal("BenchmarkRequestCPU needs 2 CPUs: one for the host, one for everything else")
	}
	c := cluster.New(b, cluster.Options{Hosts: 1, Clients: 1})
	h := c.Hosts[1]
	c.StopHTTP(1) // the harness's in-process backend, replaced by a process on the host's CPU
	backend := startBackendProcess(b, h.NS, cluster.PortHTTP)
	steerRPS(b, h.NS, 1<<cpuHost)
	steerRPS(b, c.Switch, 1<<cpuClient)
	steerRPS(b, c.Clients[0].NS, 1<<cpuClient)
	restore := pinProcess(b, os.Getpid(), cpuClient)
	defer restore()
	soaker := startSoaker(b, cpuHost)

	const (
		rate  = 2000 // requests per second
		phase = 6 * time.Second
		pairs = 8
	)
	var plain, withNLB, dataPath, agentPerReq, agentPct, wakes []float64
	run := func(nlb bool) (busy time.Duration, agent time.Duration, reqs int) {
		dst := cluster.HostIP(1)
		if nlb {
			c.Start(1)
			if _, err := c.WaitConverged([]uint8{1}, 20*time.Second); err != nil {
				b.Fatal(err)
			}
			pinProcess(b, c.Pid(1), cpuHost)
			waitClean(b, c)
			dst = cluster.VIP
		}
		var a0 time.Duration
		var w0 int
		if nlb {
			a0, w0 = procCPU(b, c.Pid(1)), switches(b, c.Pid(1))
		}
		s0 := soaker.sample()
		reqs = paced(b, c, dst, rate, phase)
		s1 := soaker.sample()
		if nlb {
			agent = procCPU(b, c.Pid(1)) - a0
			wakes = append(wakes, float64(switches(b, c.Pid(1))-w0)/phase.Seconds())
			c.Signal(1, syscall.SIGTERM) // drainstop: the NIC and the kernel as they were
			if err := c.Wait(1, 20*time.Second); err != nil {
				b.Fatal(err)
			}
		}
		b.Logf("phase nlb=%v: host CPU busy %v of %v watched", nlb, s1.busyOver(s0), s1.watched-s0.watched)
		return s1.busyOver(s0), agent, reqs
	}
	b.ResetTimer()
	for range b.N {
		for i := range pairs {
			var p, n, a time.Duration
			var pr, nr int
			for _, nlb := range []bool{i%2 == 0, i%2 != 0} {
				if nlb {
					n, a, nr = run(true)
				} else {
					p, _, pr = run(false)
				}
			}
			pu := float64(p.Nanoseconds()) / float64(pr) / 1e3
			nu := float64(n.Nanoseconds()) / float64(nr) / 1e3
			au := float64(a.Nanoseconds()) / float64(nr) / 1e3
			b.Logf("pair %d: plain %.2f µs/req (%d), nlb %.2f µs/req (%d), of which agent %.2f", i, pu, pr, nu, nr, au)
			plain = append(plain, pu)
			withNLB = append(withNLB, 100*(nu/pu-1))
			dataPath = append(dataPath, 100*((nu-au)/pu-1))
			agentPerReq = append(agentPerReq, au)
			agentPct = append(agentPct, 100*float64(a)/float64(phase))
		}
	}
	b.StopTimer()
	shares := sampleShares(b, c, soaker.cmd.Process.Pid, rate, 5, 4*time.Second)
	if be := procCPU(b, backend.Process.Pid); be == 0 {
		b.Fatal("the backend process used no CPU: the load did not reach it")
	}
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	b.ReportMetric(med(plain), "plain-µs/req")
	b.ReportMetric(med(dataPath), "datapath-overhead-%")
	b.ReportMetric(slices.Min(dataPath), "datapath-overhead-min-%")
	b.ReportMetric(slices.Max(dataPath), "datapath-overhead-max-%")
	b.ReportMetric(med(withNLB), "overhead-%")
	b.ReportMetric(slices.Min(withNLB), "overhead-min-%")
	b.ReportMetric(slices.Max(withNLB), "overhead-max-%")
	// The sampled phases: nlb's samples over the rest of the host's
	// busy samples is the CPU nlb adds to what a request costs without
	// it, measured within one window (no pairing noise), per phase.
	var ing, eg, dp, ag, all []float64
	for _, sh := range shares {
		rest := float64(sh.busy - sh.ingress - sh.egress - sh.agent)
		pct := func(n int) float64 { return 100 * float64(n) / rest }
		ing, eg, ag = append(ing, pct(sh.ingress)), append(eg, pct(sh.egress)), append(ag, pct(sh.agent))
		dp = append(dp, pct(sh.ingress+sh.egress))
		all = append(all, pct(sh.ingress+sh.egress+sh.agent))
	}
	nsPerReq := func(pct float64) float64 { return pct / 100 * med(plain) * 1e3 }
	b.ReportMetric(med(ing), "nlb_ingress-%")
	b.ReportMetric(med(eg), "nlb_egress-%")
	b.ReportMetric(nsPerReq(med(ing)), "nlb_ingress-ns/req")
	b.ReportMetric(nsPerReq(med(eg)), "nlb_egress-ns/req")
	b.ReportMetric(med(dp), "sampled-datapath-%")
	b.ReportMetric(slices.Min(dp), "sampled-datapath-min-%")
	b.ReportMetric(slices.Max(dp), "sampled-datapath-max-%")
	b.ReportMetric(med(ag), "sampled-agent-%")
	b.ReportMetric(med(all), "sampled-nlb-%")
	b.ReportMetric(slices.Min(all), "sampled-nlb-min-%")
	b.ReportMetric(slices.Max(all), "sampled-nlb-max-%")
	b.ReportMetric(float64(len(shares)), "sampled-phases")
	b.ReportMetric(med(agentPerReq), "agent-µs/req")
	b.ReportMetric(med(agentPct), "agent-cpu-%")
	b.ReportMetric(med(wakes), "agent-switches/s")
	b.ReportMetric(float64(wakeCost(2000).Nanoseconds())/1e3, "wakeup-µs")
	b.ReportMetric(rate, "req/s")
	b.ReportMetric(float64(len(plain)), "pairs")
	b.ReportMetric(0, "ns/op")
}

// switches counts the context switches of every thread of pid so far:
// each is a wake-up of the process or its preemption.
func switches(b *testing.B, pid int) int {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("threads of %d: %v", pid, err)
	}
	n := 0
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // exited
		}
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "voluntary_ctxt_switches") {
				x, _ := strconv.Atoi(strings.TrimSpace(v))
				n += x
			}
		}
	}
	return n
}

// wakeCost is the CPU one sleep and wake-up of a thread costs this
// machine: a thread's CPU clock over n sleeps of 20 µs.
func wakeCost(n int) time.Duration {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var t0, t1 unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0)
	for range n {
		unix.Nanosleep(&unix.Timespec{Nsec: 20000}, nil)
	}
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1)
	return time.Duration((t1.Nano() - t0.Nano()) / int64(n))
}

// cpuShares is where one sampled phase's busy host CPU went: samples in
// nlb's two programs (the ingress one with the helpers it calls), in the
// agent, and all busy samples (every sample on the host CPU but the
// soaker's own loop).
type cpuShares struct{ ingress, egress, agent, busy int }

// nlbHelpers are the kernel helpers nlb_ingress calls: their own samples
// are the program's. (What they call in turn is not attributed: on the
// steady-state path measured here only bpf_ktime_get_ns runs, which calls
// nothing.)
var nlbHelpers = []string{"bpf_ktime_get_ns", "bpf_skb_pull_data", "bpf_skb_change_type", "bpf_skc_lookup_tcp", "bpf_sk_release", "bpf_tcp_check_syncookie"}

// sampleShares runs n nlb phases of d at rate, each sampled by perf on the
// host CPU (cpu-clock, 20 kHz), and returns where the busy CPU went in
// each. Sampling attributes the CPU within one time window, so the
// machine's noise, which moves the whole phase, moves numerator and
// denominator together; and no statistics code runs inside the programs.
// (It costs the CPU an interrupt per sample, so these phases are apart
// from the pairs.)
func sampleShares(b *testing.B, c *cluster.Cluster, soakerPid, rate, n int, d time.Duration) []cpuShares {
	perf, err := exec.LookPath("perf")
	if err != nil {
		b.Fatal("BenchmarkRequestCPU needs perf (Debian: linux-perf; make bench installs it)")
	}
	c.Start(1)
	if _, err := c.WaitConverged([]uint8{1}, 20*time.Second); err != nil {
		b.Fatal(err)
	}
	defer func() {
		c.Signal(1, syscall.SIGTERM)
		c.Wait(1, 20*time.Second)
	}()
	pinProcess(b, c.Pid(1), cpuHost)
	waitClean(b, c)
	var out []cpuShares
	for i := range n {
		data := filepath.Join(b.TempDir(), fmt.Sprintf("phase%d.perf", i))
		// The load runs past both ends of the sampled window.
		done := make(chan struct{})
		go func() { defer close(done); paced(b, c, cluster.VIP, rate, d+2*time.Second) }()
		time.Sleep(500 * time.Millisecond)
		rec := exec.Command(perf, "record", "-q", "-C", strconv.Itoa(cpuHost), "-e", "cpu-clock", "-F", "20000", "-o", data, "--", "sleep", strconv.Itoa(int(d/time.Second)))
		if out, err := rec.CombinedOutput(); err != nil {
			b.Fatalf("perf record: %v: %s", err, out)
		}
		<-done
		rep, err := exec.Command(perf, "report", "-i", data, "--stdio", "--sort", "pid,dso,sym", "-F", "sample,pid,dso,sym", "-t", "|").Output()
		if err != nil {
			b.Fatalf("perf report: %v", err)
		}
		sh, err := parseShares(string(rep), threads(b, c.Pid(1)), threads(b, soakerPid))
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("sampled phase %d: %d busy samples; nlb_ingress %d, nlb_egress %d, agent %d", i, sh.busy, sh.ingress, sh.egress, sh.agent)
		out = append(out, sh)
	}
	return out
}

// threads lists the thread IDs of pid: perf reports samples by thread.
func threads(b *testing.B, pid int) []int {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("threads of %d: %v", pid, err)
	}
	var out []int
	for _, t := range tasks {
		tid, _ := strconv.Atoi(filepath.Base(t))
		out = append(out, tid)
	}
	return out
}

// parseShares reads perf report's "samples|tid:comm|dso|[k] symbol"
// lines, given the agent's threads and the soaker's.
func parseShares(rep string, agent, soaker []int) (cpuShares, error) {
	var sh cpuShares
	for _, line := range strings.Split(rep, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 4 {
			return sh, fmt.Errorf("perf report line %q: want 4 fields", line)
		}
		n, err := strconv.Atoi(strings.TrimSpace(f[0]))
		if err != nil {
			return sh, fmt.Errorf("perf report line %q: %v", line, err)
		}
		pidStr, _, _ := strings.Cut(strings.TrimSpace(f[1]), ":")
		pid, err := strconv.Atoi(pidStr)
		if err != nil {
			return sh, fmt.Errorf("perf report line %q: pid: %v", line, err)
		}
		dso := strings.TrimSpace(f[2])
		level, sym, _ := strings.Cut(strings.TrimSpace(f[3]), " ") // "[k] name" (kernel and eBPF) or "[.] name" (user)
		switch {
		case slices.Contains(soaker, pid) && level == "[.]":
			continue // the soaker's loop: the CPU had nothing else to do
		case pid == 0 && (strings.Contains(sym, "idle") || strings.Contains(sym, "halt")):
			continue
		}
		sh.busy += n
		switch {
		case strings.HasPrefix(dso, "bpf_prog_") && strings.HasSuffix(dso, "_nlb_ingress"),
			dso == "[kernel.kallsyms]" && slices.Contains(nlbHelpers, sym):
			sh.ingress += n
		case strings.HasPrefix(dso, "bpf_prog_") && strings.HasSuffix(dso, "_nlb_egress"):
			sh.egress += n
		case slices.Contains(agent, pid):
			sh.agent += n
		}
	}
	if sh.busy == 0 {
		return sh, errors.New("perf report: no busy samples on the host CPU")
	}
	return sh, nil
}

// waitClean waits until host 1 has no dirty bucket: a host that has just
// started suspects silent hosts may hold flows for its grace, and until
// then its data plane asks the socket table about every packet that is
// not a SYN. The steady state is what is measured.
func waitClean(b *testing.B, c *cluster.Cluster) {
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		s, err := c.Metrics(1)
		if err != nil {
			b.Fatal(err)
		}
		owned, _ := s.Value("nlb_buckets", "mark", "owned")
		dirty, _ := s.Value("nlb_buckets", "mark", "dirty")
		if owned > 0 && dirty == 0 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("host 1 still has %v dirty buckets", dirty)
		}
	}
}

// paced makes rate requests a second to dst for d, on new connections
// from every client address, and returns how many succeeded; every one
// must.
func paced(b *testing.B, c *cluster.Cluster, dst netip.Addr, rate int, d time.Duration) int {
	const workers = 8
	cl := c.Clients[0]
	interval := time.Duration(workers) * time.Second / time.Duration(rate)
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := start.Add(time.Duration(w) * interval / workers)
			for i := 0; next.Before(start.Add(d)); i++ {
				time.Sleep(time.Until(next))
				next = next.Add(interval)
				conn, err := cl.DialTo(cl.IPs[(w+i)%len(cl.IPs)], netip.AddrPortFrom(dst, cluster.PortHTTP), 3*time.Second)
				if err == nil {
					var id uint8
					id, err = cluster.HTTPHost(conn, 3*time.Second)
					conn.Close()
					if err == nil && id != 1 {
						err = fmt.Errorf("answered by host %d", id)
					}
				}
				if err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		b.Fatalf("%d of %d requests to %v failed", failed.Load(), failed.Load()+ok.Load(), dst)
	}
	return int(ok.Load())
}

// startBackendProcess runs this test binary as an HTTP backend on port in
// ns, pinned to the host's CPU, and stops it at cleanup.
func startBackendProcess(b *testing.B, ns *netns.NS, port uint16) *exec.Cmd {
	cmd := exec.Command("nsenter", "--net="+ns.Path(), "--", "taskset", "-c", strconv.Itoa(cpuHost), os.Args[0])
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=:%d", backendEnv, port))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the backend process: %v", err)
	}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		b.Fatalf("backend process: %q, %v", line, err)
	}
	return cmd
}

// steerRPS sends the receive processing of every interface of ns to the
// CPUs of mask (receive packet steering). The namespace's interfaces are
// removed with it, so there is nothing to restore.
func steerRPS(b *testing.B, ns *netns.NS, mask int) {
	script := fmt.Sprintf("for f in /sys/class/net/*/queues/rx-*/rps_cpus; do echo %x > $f || exit 1; done", mask)
	if out, err := exec.Command("ip", "netns", "exec", ns.Name, "sh", "-c", script).CombinedOutput(); err != nil {
		b.Fatalf("RPS in %s: %v: %s", ns.Name, err, out)
	}
}

// pinProcess pins every thread of pid to cpu (threads it starts later
// inherit it) and returns what puts back the mask each had.
func pinProcess(b *testing.B, pid, cpu int) (restore func()) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	if err != nil || len(tasks) == 0 {
		b.Fatalf("threads of %d: %v", pid, err)
	}
	var one unix.CPUSet
	one.Set(cpu)
	saved := map[int]unix.CPUSet{}
	for _, t := range tasks {
		tid, _ := strconv.Atoi(filepath.Base(t))
		var old unix.CPUSet
		if unix.SchedGetaffinity(tid, &old) != nil {
			continue // exited
		}
		if err := unix.SchedSetaffinity(tid, &one); err != nil && err != unix.ESRCH {
			b.Fatalf("pin thread %d to CPU %d: %v", tid, cpu, err)
		}
		saved[tid] = old
	}
	return func() {
		var all unix.CPUSet
		for i := range runtime.NumCPU() {
			all.Set(i)
		}
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		for _, t := range tasks {
			tid, _ := strconv.Atoi(filepath.Base(t))
			m, ok := saved[tid]
			if !ok {
				m = all
			}
			unix.SchedSetaffinity(tid, &m)
		}
	}
}

// soaker is a process that spins at the lowest priority (SCHED_IDLE) on
// one CPU, reading the clock: any task, interrupt or softirq that wants
// the CPU preempts it at once, and every gap between two of its readings
// longer than soakGap is time the CPU was busy with something else. (Its
// own run time would not do: this kernel has no IRQ time accounting, so
// softirqs run on the soaker's back would count as the soaker's.) It
// publishes the busy time and the time it has watched, in ns, in a
// shared page. It is this test binary, run with soakEnv; Go's
// asynchronous preemption is off and GOMAXPROCS is 1, so the runtime
// leaves its one goroutine alone but for sysmon's rare wake-ups (a small
// constant in every phase).
type soaker struct {
	cmd  *exec.Cmd
	page []byte
}

const (
	soakEnv = "NLB_BENCH_SOAK"
	soakGap = 200 // ns: a reading takes ~40
)

func startSoaker(b *testing.B, cpu int) *soaker {
	path := filepath.Join(b.TempDir(), "soak")
	if err := os.WriteFile(path, make([]byte, 4096), 0o600); err != nil {
		b.Fatal(err)
	}
	page := mmapShared(b, path)
	cmd := exec.Command("taskset", "-c", strconv.Itoa(cpu), os.Args[0])
	cmd.Env = append(os.Environ(), soakEnv+"="+path, "GOMAXPROCS=1", "GODEBUG=asyncpreemptoff=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the soaker: %v", err)
	}
	s := &soaker{cmd: cmd, page: page}
	b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); unix.Munmap(page) })
	for deadline := time.Now().Add(5 * time.Second); s.word(1) == 0; {
		if time.Now().After(deadline) {
			b.Fatal("the soaker did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s
}

func mmapShared(b *testing.B, path string) []byte {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	page, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatalf("mmap %s: %v", path, err)
	}
	return page
}

func (s *soaker) word(i int) int64 {
	return atomic.LoadInt64((*int64)(unsafe.Pointer(&s.page[8*i])))
}

// soak is the soaker's body (TestMain).
func soak(path string) int {
	runtime.LockOSThread()
	if err := unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: 5 /* SCHED_IDLE */}, 0); err != nil {
		fmt.Fprintln(os.Stderr, "soaker: SCHED_IDLE:", err)
		return 1
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soaker:", err)
		return 1
	}
	page, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soaker: mmap:", err)
		return 1
	}
	busy := (*int64)(unsafe.Pointer(&page[0]))
	watched := (*int64)(unsafe.Pointer(&page[8]))
	start := time.Now()
	last := int64(1)
	for {
		now := int64(time.Since(start)) + 1
		if d := now - last; d > soakGap {
			atomic.AddInt64(busy, d)
		}
		last = now
		atomic.StoreInt64(watched, now)
	}
}

// cpuSample is one instant of the host CPU's accounting, by the soaker's
// clock.
type cpuSample struct{ busy, watched time.Duration }

func (s *soaker) sample() cpuSample {
	return cpuSample{busy: time.Duration(s.word(0)), watched: time.Duration(s.word(1))}
}

// busyOver is the host CPU's busy time since s0.
func (s cpuSample) busyOver(s0 cpuSample) time.Duration { return s.busy - s0.busy }
