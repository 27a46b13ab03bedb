//go:build linux

package e2e

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

// TestSystemdNotify: an agent started as systemd would (NOTIFY_SOCKET,
// WATCHDOG_USEC) reports READY=1, its state, epoch and members in
// STATUS=, pings the watchdog, brackets a reload with RELOADING=1 and
// READY=1, and while it drains on SIGTERM says STOPPING=1 and asks for
// more time (EXTEND_TIMEOUT_USEC).
func TestSystemdNotify(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	sock := filepath.Join(t.TempDir(), "notify")
	l, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	msgs := make(chan string, 10000)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, _, err := l.ReadFromUnix(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	c.Hosts[1].Env = []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=2000000"}
	startAll(t, c, all3)
	var seen []string
	expect := func(what string, ok func(string) bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case m := <-msgs:
				seen = append(seen, m)
				if ok(m) {
					return
				}
			case <-deadline:
				t.Fatalf("no %s from host 1 in 10 s; it sent %q", what, seen[max(0, len(seen)-10):])
			}
		}
	}
	has := func(s string) func(string) bool { return func(m string) bool { return strings.Contains(m, s) } }
	expect("READY=1", has("READY=1"))
	expect("STATUS= converged with 3 members", func(m string) bool {
		return strings.Contains(m, "STATUS=converged") && strings.Contains(m, "members 1,2,3")
	})
	expect("WATCHDOG=1", has("WATCHDOG=1"))
	c.Signal(1, syscall.SIGHUP)
	expect("RELOADING=1", has("RELOADING=1\nMONOTONIC_USEC="))
	expect("READY=1 after the reload", has("READY=1"))
	c.Signal(1, syscall.SIGTERM)
	expect("STOPPING=1", has("STOPPING=1"))
	expect("EXTEND_TIMEOUT_USEC", has("EXTEND_TIMEOUT_USEC="))
	if err := c.Wait(1, 20*time.Second); err != nil {
		t.Fatal(err)
	}
}
