//go:build linux

package deploy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
)

// buildPackage runs make package with a version and returns a copy of the
// .deb (make package empties dist/ first).
func buildPackage(t *testing.T, root, version string) string {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "package", "VERSION="+version)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make package VERSION=%s: %v\n%s", version, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(root, "dist", "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make package left %v", debs)
	}
	b, err := os.ReadFile(debs[0])
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(debs[0]))
	if err := os.WriteFile(out, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestPackageUpgrade: a 3-host cluster runs the packaged nlbd (version 1)
// under live traffic; host by host, the package is upgraded to version 2
// with dpkg -i. Its post-install script hands the running agent over
// (SIGUSR2: exit keeping the data plane) and the supervisor starts the
// new binary, which adopts it. No connection fails, and every host then
// runs version 2. (No systemd runs here: a stand-in systemctl signals the
// agent, and the test restarts it as Restart=always would.)
func TestPackageUpgrade(t *testing.T) {
	mayInstall(t)
	root, _ := filepath.Abs("..")
	v1, v2 := "0.8.0~upgrade1", "0.8.0~upgrade2"
	deb1, deb2 := buildPackage(t, root, v1), buildPackage(t, root, v2)
	t.Cleanup(func() { exec.Command("dpkg", "--purge", "nlb").Run() })
	if out, err := exec.Command("dpkg", "-i", deb1).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i %s: %v\n%s", deb1, err, out)
	}

	c := cluster.New(t, cluster.Options{Nlbd: "/usr/sbin/nlbd"})
	all := []uint8{1, 2, 3}
	c.StartAll(all)
	versions := func() map[string]int {
		out := map[string]int{}
		for _, id := range all {
			if q, err := c.Query(id); err == nil {
				out[q.Version]++
			}
		}
		return out
	}
	if v := versions(); v[v1] != 3 {
		t.Fatalf("before the upgrade: versions %v, want 3 × %s", v, v1)
	}

	// Live traffic: new connections all along, each must succeed.
	var ok, failed atomic.Int64
	var errs []string
	var mu sync.Mutex
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := c.Clients[w%len(c.Clients)]
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := cl.Get(cl.IPs[0], cluster.PortHTTP, 4*time.Second); err != nil {
					failed.Add(1)
					mu.Lock()
					errs = append(errs, err.Error())
					mu.Unlock()
				} else {
					ok.Add(1)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	time.Sleep(time.Second)

	// A rolling upgrade: each host in turn installs the package (the first
	// an upgrade, the others a reinstall of it: one file system serves all
	// three here), its post-install script hands that host's agent over
	// through a stand-in systemctl (the unit is active; kill signals the
	// agent), and the test starts the new binary as Restart=always would.
	dir := t.TempDir()
	for _, id := range all {
		fake := filepath.Join(dir, fmt.Sprintf("systemctl%d", id))
		script := fmt.Sprintf("#!/bin/sh\necho \"$@\" >> %s/calls%d\ncase \"$1\" in\nkill) kill -USR2 %d ;;\nesac\nexit 0\n", dir, id, c.Pid(id))
		if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		up := exec.Command("dpkg", "-i", deb2)
		up.Env = append(os.Environ(), "NLB_TEST_SYSTEMCTL="+fake)
		if out, err := up.CombinedOutput(); err != nil {
			t.Fatalf("host %d: dpkg -i %s: %v\n%s", id, deb2, err, out)
		}
		calls, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("calls%d", id)))
		if !strings.Contains(string(calls), "kill --signal=USR2 nlbd.service") {
			t.Fatalf("host %d: the post-install script did not hand the agent over; systemctl calls:\n%s", id, calls)
		}
		if err := c.Wait(id, 10*time.Second); err != nil {
			t.Fatalf("host %d after the hand-over: %v", id, err)
		}
		c.Start(id)
		if _, err := c.WaitConverged(all, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("package upgrade %s -> %s under load: %d new connections, %d failed", v1, v2, ok.Load(), failed.Load())
	if failed.Load() != 0 {
		t.Errorf("%d connections failed during the upgrade: %v", failed.Load(), errs[:min(5, len(errs))])
	}
	if v := versions(); v[v2] != 3 {
		t.Errorf("after the upgrade: versions %v, want 3 × %s", v, v2)
	}
	for _, id := range all {
		b, _ := os.ReadFile(c.Hosts[id].Log)
		if !strings.Contains(string(b), "adopted the pinned data plane") {
			t.Errorf("host %d's new agent did not adopt the data plane", id)
		}
	}
}
