//go:build linux

package e2e

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// TestFaults: host-level faults under 150 long-lived connections and a
// stream of new ones, in one cluster: the NIC of host 3 goes down for 2 s
// and comes back; its MTU changes; the bpffs pins of host 2's data plane
// are removed under its running agent (it pins them again, so a later
// restart still adopts the data plane without dropping a connection);
// host 1's agent crash-loops five times. Each time the agent recovers or
// says why, the cluster reconverges, and no connection that did not run
// through the failed NIC is lost.
func TestFaults(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	startAll(t, c, all3)

	t.Run("nic-down-up", func(t *testing.T) {
		ip(t, c.Hosts[3], "link", "set", c.Hosts[3].Ifname, "down")
		time.Sleep(2 * time.Second)
		ip(t, c.Hosts[3], "link", "set", c.Hosts[3].Ifname, "up")
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatalf("after the NIC came back: %v\n%s", err, tail(c.Hosts[3].Log))
		}
		if c.Pid(3) == 0 || syscall.Kill(c.Pid(3), 0) != nil {
			t.Fatalf("host 3's agent exited:\n%s", tail(c.Hosts[3].Log))
		}
	})

	ll := openLongLived(t, c, 150)
	ld := startLoad(c, 4, cluster.PortHTTP)

	t.Run("mtu", func(t *testing.T) {
		e0, _ := c.WaitConverged(all3, 5*time.Second)
		for _, mtu := range []string{"1280", "9000", "1500"} {
			ip(t, c.Hosts[3], "link", "set", c.Hosts[3].Ifname, "mtu", mtu)
			time.Sleep(time.Second)
		}
		if e, err := c.WaitConverged(all3, 5*time.Second); err != nil || e != e0 {
			t.Fatalf("MTU changes: epoch %d → %d, %v", e0, e, err)
		}
	})

	t.Run("pins-removed", func(t *testing.T) {
		h := c.Hosts[2]
		dir := filepath.Join(h.BPFFS, "nlb", h.Ifname)
		pins, err := os.ReadDir(dir)
		if err != nil || len(pins) < 6 {
			t.Fatalf("pins of host 2: %v %v", pins, err)
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			back, _ := os.ReadDir(dir)
			if len(back) == len(pins) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pins not restored: %d of %d\n%s", len(back), len(pins), tail(h.Log))
			}
			time.Sleep(100 * time.Millisecond)
		}
		m, err := c.Metrics(2)
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := m.Value("nlb_datapath_repins_total"); v < float64(len(pins)) {
			t.Errorf("nlb_datapath_repins_total = %v, want ≥ %d", v, len(pins))
		}
		// The restored pins carry the data plane across a crash.
		c.Kill(2)
		c.Start(2)
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		// Host 2's first restart: any adoption in its log is this one.
		if raw, _ := os.ReadFile(h.Log); !strings.Contains(string(raw), "adopted the pinned data plane") {
			t.Errorf("the restarted agent did not adopt the data plane:\n%s", tail(h.Log))
		}
	})

	t.Run("bad-reload", func(t *testing.T) {
		h := c.Hosts[1]
		good, err := os.ReadFile(h.Config)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(h.Config, good, 0o600)
		q0, err := c.Query(1)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct{ change, old, new, wantKey string }{
			{"invalid weight", `web: {weight: "equal"`, `web: {weight: "250"`, "host.rules.web.weight"},
			{"unknown key", "  drain_timeout:", "  colour: blue\n  drain_timeout:", "colour"},
			{"interface change", "interface: " + h.Ifname, "interface: eth9", "host.interface"},
		} {
			bad := strings.Replace(string(good), tc.old, tc.new, 1)
			if bad == string(good) {
				t.Fatalf("%s: test bug, %q not in the config", tc.change, tc.old)
			}
			if err := os.WriteFile(h.Config, []byte(bad), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := c.Local(1, remote.CmdReload, remote.Args{})
			if err == nil || !strings.Contains(err.Error(), tc.wantKey) || !strings.Contains(err.Error(), "running configuration kept") {
				t.Errorf("reload with %s: %v, want a refusal naming %s", tc.change, err, tc.wantKey)
			}
		}
		q1, err := c.Query(1)
		if err != nil || q1.Epoch != q0.Epoch || q1.State != q0.State || !maps.Equal(q1.Owned, q0.Owned) {
			t.Errorf("after refused reloads: %+v %v, before %+v", q1, err, q0)
		}
	})

	t.Run("crash-loop", func(t *testing.T) {
		for range 5 {
			c.Kill(1)
			c.Start(1)
			time.Sleep(300 * time.Millisecond)
		}
		if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
			t.Fatalf("after the crash loop: %v\n%s", err, tail(c.Hosts[1].Log))
		}
	})

	time.Sleep(time.Second)
	ld.finish(t, "new connections through the faults")
	ll.finish(t, "long-lived connections through the faults")
}

func ip(t *testing.T, h *cluster.Host, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", h.NS.Name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip %v: %v: %s", args, err, out)
	}
}

// tail is the end of a log file, for failure messages.
func tail(path string) string {
	raw, _ := os.ReadFile(path)
	if len(raw) > 3000 {
		raw = raw[len(raw)-3000:]
	}
	return string(raw)
}
