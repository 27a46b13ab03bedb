//go:build linux

package e2e

import (
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// TestKeyRotation rolls a new cluster key across a running 3-host cluster
// in the three documented steps (docs/operations.md, "Rotating keys"),
// one host at a time, under live traffic: no failed connection, no
// eviction (the epoch never changes), no heartbeat refused for its key;
// afterwards the old key opens nothing.
func TestKeyRotation(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	epoch := startAll(t, c, all3)
	ll := openLongLived(t, c, 50)
	ld := startLoad(c, 4, cluster.PortHTTP)
	before := scrapeAll(t, c)

	r, err := config.Load(c.Hosts[1].Config)
	if err != nil {
		t.Fatal(err)
	}
	seed := hex.EncodeToString(r.Seed[:]) // pinned: the seed derives from the key
	oldKey := c.KeyFile
	newKey := filepath.Join(t.TempDir(), "cluster-2.key")
	monitorKey := filepath.Join(t.TempDir(), "monitor.key")
	for p, k := range map[string]string{newKey: "a new cluster key, 32 bytes or more", monitorKey: "the monitor key: reads, never writes"} {
		if err := os.WriteFile(p, []byte(k), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	reload := func(id uint8) {
		t.Helper()
		res, err := c.Local(id, remote.CmdReload, remote.Args{})
		if err != nil || res.Status != remote.StatusOK {
			t.Fatalf("host %d reload: %v %+v", id, err, res)
		}
		time.Sleep(300 * time.Millisecond) // a few heartbeats under the new keys
	}
	for _, step := range []struct {
		name              string
		cur, next, pinned string
	}{
		{"accept the new key", oldKey, newKey, seed},
		{"sign with the new key", newKey, oldKey, seed},
		{"drop the old key", newKey, "", seed},
	} {
		for _, id := range all3 {
			if step.next == "" {
				c.SetKeys(id, step.cur, step.next, step.pinned, monitorKey) // and add a monitor key
			} else {
				c.SetKeys(id, step.cur, step.next, step.pinned)
			}
			reload(id)
		}
		t.Logf("step %q done on every host", step.name)
	}
	time.Sleep(time.Second)
	after := scrapeAll(t, c)
	for _, id := range all3 {
		q, err := c.Query(id)
		if err != nil {
			t.Fatal(err)
		}
		if q.Epoch != epoch || len(q.Members) != 3 {
			t.Errorf("host %d: epoch %d members %v after the rotation, want epoch %d with 3 members", id, q.Epoch, q.Members, epoch)
		}
		a, _ := after[id].Value("nlb_heartbeat_frames_refused_total", "reason", "bad-auth")
		b, _ := before[id].Value("nlb_heartbeat_frames_refused_total", "reason", "bad-auth")
		if a != b {
			t.Errorf("host %d refused %.0f heartbeats for their key during the rotation", id, a-b)
		}
	}
	ld.finish(t, "new connections during the key rotation")
	ll.finish(t, "long-lived connections during the key rotation")

	// The old key opens nothing any more; the new one does; the monitor
	// key reads and cannot stop.
	nlbctl := buildNlbctl(t)
	for _, tc := range []struct {
		key, role, cmd string
		code           int
	}{
		{oldKey, "admin", "query", 3},
		{newKey, "admin", "query", 0},
		{monitorKey, "monitor", "query", 0},
		{monitorKey, "monitor", "stop", 5},
		{monitorKey, "admin", "stop", 3},
	} {
		out, code := nlbctlIn(t, c.Clients[0], nlbctl, "--cluster", cluster.VIP.String(), "--key-file", tc.key, "--role", tc.role, "--timeout", "1s", tc.cmd)
		if code != tc.code {
			t.Errorf("%s --role %s with %s: exit %d, want %d\n%s", tc.cmd, tc.role, filepath.Base(tc.key), code, tc.code, out)
		}
	}
	for _, id := range all3 {
		if q, err := c.Query(id); err != nil || q.State == "stopped" {
			t.Errorf("host %d after a monitor's stop: %v %v", id, q, err)
		}
	}
}

// nlbctlIn runs nlbctl in client cl's namespace and returns its output
// and exit code.
func nlbctlIn(t *testing.T, cl *cluster.Client, nlbctl string, args ...string) (string, int) {
	t.Helper()
	full := append([]string{"--net=" + cl.NS.Path(), "--", nlbctl}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}
