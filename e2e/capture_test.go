//go:build linux

package e2e

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/nlbproject/nlb/capture"
	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// captureWhile runs nlbctl capture in client 0's namespace for d, with
// requests from that client during the middle of it; it returns the
// events, capture's exit code, and the hosts that served the requests.
func captureWhile(t *testing.T, c *cluster.Cluster, nlbctl string, d time.Duration, extra ...string) ([]capture.Event, int, map[uint8]int) {
	t.Helper()
	cl := c.Clients[0]
	args := append([]string{"--net=" + cl.NS.Path(), "--", nlbctl, "--json", "--config", c.Hosts[1].Config,
		"--cluster", cluster.VIP.String(), "capture", "--interface", cl.Ifname, "--duration", d.String()}, extra...)
	cmd := exec.Command("nsenter", args...)
	var out strings.Builder
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // the socket is open
	served := map[uint8]int{}
	for end := time.Now().Add(d - time.Second); time.Now().Before(end); {
		if host, _, err := cl.Get(cl.IPs[0], cluster.PortHTTP, time.Second); err == nil {
			served[host]++
		}
		time.Sleep(10 * time.Millisecond)
	}
	code := 0
	if err := cmd.Wait(); err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	var evs []capture.Event
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		var e capture.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("capture --json line %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs, code, served
}

// TestCapture: nlbctl capture, from a client of a healthy cluster (each
// flow's owner asked of the agents), shows heartbeats of every host and
// the answers to the client's flows and reports nothing wrong; nlbctl
// filter --pcap on what it wrote gives each host exactly the flows the
// backends served. Then host 3's filter is detached (it accepts every
// flow): capture reports flows answered twice, naming host 3 and the
// flow's owner, and flows answered by host 3 that the tables give to
// another.
func TestCapture(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	startAll(t, c, all3)
	nlbctl := buildNlbctl(t)
	pcap := filepath.Join(t.TempDir(), "healthy.pcap")

	evs, code, served := captureWhile(t, c, nlbctl, 4*time.Second, "--write", pcap)
	kinds := map[string]int{}
	heard := map[uint8]bool{}
	for _, e := range evs {
		kinds[e.Kind]++
		if e.Kind == "heartbeat" {
			heard[e.Host] = e.Verified
		}
		if e.Kind == "problem" {
			t.Errorf("healthy cluster: %s", e.Text)
		}
	}
	t.Logf("healthy: %v; served %v", kinds, served)
	if code != 0 || kinds["answer"] == 0 || len(heard) != 3 || !heard[1] || !heard[2] || !heard[3] {
		t.Errorf("healthy capture: exit %d, events %v, heartbeats verified %v", code, kinds, heard)
	}

	// The capture replayed against the live tables.
	out, rc := nlbctlIn(t, c.Clients[0], nlbctl, "--json", "--cluster", cluster.VIP.String(), "--config", c.Hosts[1].Config, "filter", "--pcap", pcap)
	var rep capture.Report
	if err := json.Unmarshal([]byte(out), &rep); rc != 0 || err != nil {
		t.Fatalf("filter --pcap: exit %d, %v\n%s", rc, err, out)
	}
	total := 0
	for _, h := range rep.Hosts {
		total += h.Flows
		if h.Flows != served[h.Host] {
			t.Errorf("filter --pcap gives host %d %d flows; its backend served %d", h.Host, h.Flows, served[h.Host])
		}
	}
	t.Logf("filter --pcap: %d flows, hosts %+v, busiest %+v", rep.Flows, rep.Hosts, rep.Busiest[:min(2, len(rep.Busiest))])
	if total == 0 || rep.Untaken != 0 {
		t.Errorf("filter --pcap: %d flows taken, %d by no host", total, rep.Untaken)
	}

	// Break host 3: its ingress program detached, it takes every flow.
	pin := filepath.Join(c.Hosts[3].BPFFS, "nlb", c.Hosts[3].Ifname, "link_ingress")
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Detach(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	evs, code, _ = captureWhile(t, c, nlbctl, 3*time.Second)
	twice, wrong := 0, 0
	for _, e := range evs {
		if e.Kind == "problem" && strings.Contains(e.Text, "but the tables give it to") {
			if e.Host != 3 || e.Owner == 3 {
				t.Errorf("a wrong answer not host 3's: %s", e.Text)
			}
			wrong++
		}
		if e.Kind == "problem" && len(e.Hosts) == 2 && strings.Contains(e.Text, "answered by 2 hosts") {
			if e.Hosts[1] != 3 && e.Hosts[0] != 3 {
				t.Errorf("a flow answered twice without host 3: %s", e.Text)
			}
			if twice == 0 {
				t.Logf("%s", e.Text)
			}
			twice++
		}
	}
	t.Logf("host 3 unfiltered: %d flows answered twice, %d answered by host 3 though not its", twice, wrong)
	if code != 4 || twice == 0 || wrong == 0 {
		t.Errorf("host 3 unfiltered: exit %d, %d flows reported answered twice, %d answered by the wrong host", code, twice, wrong)
	}
}
