//go:build linux

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// notifyScript records each event a host's hook hears, one line each,
// in DIR/notify-ID.log; a hook for a command hangs (and is killed at the
// timeout) so that the test sees hanging hooks leave the agent alone.
const notifyScript = `#!/bin/sh
echo "$NLB_EVENT_SEQ $NLB_EVENT $NLB_EVENT_HOST $NLB_STATE" >> "%s/notify-$NLB_HOST_ID.log"
if [ "$NLB_EVENT" = command ]; then sleep 30; fi
`

// TestManager: the cluster manager on a namespace cluster, as an
// operator uses it. The web view (headless Chromium, driven by chromedp)
// shows the three hosts and their shares; a drainstop clicked and
// confirmed on the page drains host 2; host 3 killed turns red on the
// page. nlbctl events shows the drainstop, the evict and the join in
// order; a suspend survives an agent restart (host.retain_state); the
// notify hook heard the events while hanging hooks were killed; display
// and queryport show the picture.
func TestManager(t *testing.T) {
	netns.RequireRoot(t)
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is needed for the web view's test (make deps installs it): %v", err)
	}
	dir := t.TempDir()
	script := filepath.Join(dir, "notify.sh")
	os.WriteFile(script, []byte(fmt.Sprintf(notifyScript, dir)), 0o755)
	c := cluster.New(t, cluster.Options{HostExtra: fmt.Sprintf("  retain_state: true\n  notify: {command: [%s], timeout: 1s}\n", script)})
	startAll(t, c, all3)
	nlbctl := buildNlbctl(t)
	cl := c.Clients[0]
	ctl := func(want int, args ...string) string {
		t.Helper()
		out, code := nlbctlIn(t, cl, nlbctl, append([]string{"--cluster", cluster.VIP.String(), "--key-file", c.KeyFile}, args...)...)
		if code != want {
			t.Fatalf("nlbctl %v: exit %d, want %d\n%s", args, code, want, out)
		}
		return out
	}
	load := startLoad(c, 2, cluster.PortHTTP)

	// The web view: nlbctl ui in the client's namespace, reached by the
	// browser through a proxy on this namespace's loopback.
	ui := exec.Command("nsenter", "--net="+cl.NS.Path(), "--", nlbctl, "--cluster", cluster.VIP.String(),
		"--key-file", c.KeyFile, "ui", "--listen", "127.0.0.1:18080")
	uiLog, _ := os.Create(filepath.Join(dir, "ui.log"))
	ui.Stdout, ui.Stderr = uiLog, uiLog
	if err := ui.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { ui.Process.Kill(); ui.Wait() }()
	page := proxyInto(t, cl.NS, "127.0.0.1:18080")

	actx, cancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 1100))...)
	defer cancel()
	bctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first run starts the browser, with no deadline (one would stop
	// the browser); each step after it has its own.
	if err := chromedp.Do(bctx, chromedp.Sleep(0)); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	fail := func(what string, err error) {
		t.Helper()
		b, _ := os.ReadFile(filepath.Join(dir, "ui.log"))
		t.Fatalf("web view: %s: %v\nnlbctl ui:\n%s", what, err, b)
	}
	browse := func(d time.Duration, what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, d)
		defer cancel()
		if err := chromedp.Do(ctx, steps...); err != nil {
			fail(what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			fail("read "+sel, err)
		}
		return s
	}
	browse(60*time.Second, "open the page", chromedp.Navigate("http://"+page+"/"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-ready="1"]`)), chromedp.WaitVisible(chromedp.CSS(`#host-3 .share`)))
	for _, id := range all3 {
		sel := fmt.Sprintf("#host-%d", id)
		share := text(sel + " .share")
		var web float64
		i := strings.Index(share, "web ")
		if i < 0 {
			t.Errorf("host %d's card shows no web share: %q", id, share)
			continue
		}
		if _, err := fmt.Sscanf(share[i:], "web %f%%", &web); err != nil || web < 30 || web > 37 {
			t.Errorf("host %d's card shows share %q: want about a third of web's buckets", id, share)
		}
		ctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		class, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS(sel), "class"))
		cancel()
		if err != nil || strings.Contains(class.Value, "sick") {
			t.Errorf("host %d's card: class %q, %v", id, class.Value, err)
		}
	}
	if shot := os.Getenv("NLB_UI_SCREENSHOT"); shot != "" {
		ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
		chromedp.Do(ctx, chromedp.Sleep(2500*time.Millisecond))
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		cancel()
		if err == nil {
			os.WriteFile(shot, png, 0o644)
		}
	}

	// A drainstop clicked and confirmed on the page drains host 2.
	browse(20*time.Second, "click drainstop on host 2", chromedp.Click(chromedp.CSS(`#host-2 button[data-cmd="drainstop"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-yes`)), chromedp.Click(chromedp.CSS(`#confirm-yes`)))
	waitStateFor(t, c, 2, 30*time.Second, "draining", "stopped")
	if out := ctl(0, "--target", "2", "query"); !strings.Contains(out, "draining") && !strings.Contains(out, "stopped") {
		t.Errorf("nlbctl query after the page's drainstop:\n%s", out)
	}

	load.finish(t, "web load during the page's drainstop")

	// Host 3 killed: evicted by the others, and its card turns red.
	c.Kill(3)
	browse(30*time.Second, "host 3 turns sick on the page", chromedp.WaitVisible(chromedp.CSS(`#host-3.sick`)))
	pctx, pcancel := context.WithTimeout(bctx, 20*time.Second)
	_, err = chromedp.Run(pctx, chromedp.Poll[bool](`document.querySelector("#host-3.sick") !== null && document.querySelector("#host-3").textContent.includes("evicted")`))
	pcancel()
	if err != nil {
		fail("host 3 shown evicted", err)
	}
	t.Logf("host 3's card: %s", text("#host-3"))

	// Host 3 comes back (it adopts its data plane) and joins; host 2
	// starts again.
	c.Start(3)
	ctl(0, "--target", "2", "start")
	if _, err := c.WaitConverged(all3, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// nlbctl events: the drainstop, the evict, the join, in order.
	var evs struct {
		Events []remote.HostEvent `json:"events"`
	}
	if err := json.Unmarshal([]byte(ctl(0, "--json", "events", "--since", "5m")), &evs); err != nil {
		t.Fatal(err)
	}
	find := func(from int, ok func(e remote.HostEvent) bool) int {
		for i := from; i < len(evs.Events); i++ {
			if ok(evs.Events[i]) {
				return i
			}
		}
		return -1
	}
	drain := find(0, func(e remote.HostEvent) bool {
		return e.On == 2 && e.Kind == "command" && e.Detail == "drainstop" && strings.HasSuffix(e.Source, "(admin key)")
	})
	evict := find(drain+1, func(e remote.HostEvent) bool { return e.On == 1 && e.Kind == "evict" && e.Host == 3 })
	join := find(evict+1, func(e remote.HostEvent) bool { return e.On == 1 && e.Kind == "join" && e.Host == 3 })
	if drain < 0 || evict < 0 || join < 0 {
		t.Errorf("events: want host 2's drainstop (with its source), then host 1 seeing host 3 evicted, then joining: at %d, %d, %d", drain, evict, join)
	}
	evText := ctl(0, "events", "--since", "5m")
	t.Logf("nlbctl events (the last lines):\n%s", lastLines(evText, 12))
	if !strings.Contains(evText, "TIME") || !strings.Contains(evText, "evict") {
		t.Errorf("events text:\n%s", evText)
	}
	// --since SEQ needs one host; a bad --since is a usage error.
	ctl(2, "events", "--since", "12")
	ctl(2, "events", "--since", "yesterday")
	var last1 uint64
	for _, e := range evs.Events {
		if e.On == 1 {
			last1 = e.Seq
		}
	}
	if out := ctl(0, "--target", "1", "events", "--since", fmt.Sprint(last1)); strings.Contains(out, fmt.Sprintf(" %d ", last1)) || strings.Count(out, "\n") > 10 {
		t.Errorf("host 1's events after %d:\n%s", last1, out)
	}

	// --follow --json: one object a line, new events as they come (a
	// reload on host 2 while it follows).
	fctx, fcancel := context.WithTimeout(context.Background(), 4*time.Second)
	follow := exec.CommandContext(fctx, "nsenter", "--net="+cl.NS.Path(), "--", nlbctl, "--cluster", cluster.VIP.String(),
		"--key-file", c.KeyFile, "--json", "events", "--follow", "--interval", "300ms", "--since", "1s")
	var followed strings.Builder
	follow.Stdout = &followed
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	ctl(0, "--target", "2", "reload")
	follow.Wait()
	fcancel()
	reloads := 0
	for _, line := range strings.Split(strings.TrimSpace(followed.String()), "\n") {
		var e remote.HostEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("events --follow --json: not one object a line: %q: %v", line, err)
		}
		if e.Kind == "reload" && e.On == 2 {
			reloads++
		}
	}
	if reloads != 1 {
		t.Errorf("events --follow saw host 2's reload %d times:\n%s", reloads, followed.String())
	}

	// A retained suspend survives an agent restart: the host comes back
	// suspended, ignores start, and resume brings it back.
	ctl(0, "--target", "1", "suspend")
	waitState(t, c, 1, "suspended")
	c.Signal(1, syscall.SIGTERM)
	if err := c.Wait(1, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(c.Hosts[1].DataDir, c.Hosts[1].Ifname+".retained.json"))
	if !strings.Contains(string(b), `"state": "suspended"`) {
		t.Errorf("retained file: %s", b)
	}
	c.Start(1)
	time.Sleep(2 * time.Second)
	waitState(t, c, 1, "suspended")
	ctl(0, "--target", "1", "start")
	time.Sleep(500 * time.Millisecond)
	waitState(t, c, 1, "suspended")
	if out := ctl(0, "--target", "1", "events"); !strings.Contains(out, "in retained state suspended") {
		t.Errorf("host 1's events do not say it restored the retained state:\n%s", out)
	}
	ctl(0, "--target", "1", "resume")
	if _, err := c.WaitConverged(all3, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// The notify hook heard host 1's events, and its hanging runs (one
	// per command) were killed while the agent went on.
	hooked, _ := os.ReadFile(filepath.Join(dir, "notify-1.log"))
	if !strings.Contains(string(hooked), " evict 3 ") || !strings.Contains(string(hooked), " join 3 ") || !strings.Contains(string(hooked), " command 1 ") {
		t.Errorf("host 1's hook heard:\n%s", hooked)
	}
	var timeouts, oks float64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		m, err := c.Metrics(1)
		if err != nil {
			t.Fatal(err)
		}
		timeouts, _ = m.Value("nlb_notify_runs_total", "result", "timeout")
		oks, _ = m.Value("nlb_notify_runs_total", "result", "ok")
		if timeouts >= 2 && oks >= 3 {
			break
		}
	}
	if timeouts < 2 || oks < 3 {
		t.Errorf("host 1's hook runs since its restart: %v killed (want the hanging ones for start and resume), %v ok", timeouts, oks)
	}

	// queryport and display.
	out := ctl(0, "queryport", "web")
	t.Logf("nlbctl queryport web:\n%s", out)
	if strings.Count(out, "\nweb ") != 3 {
		t.Errorf("queryport web: want a row per host:\n%s", out)
	}
	var qp struct {
		Replies []struct {
			Result remote.PortsResult `json:"result"`
		} `json:"replies"`
	}
	if err := json.Unmarshal([]byte(ctl(0, "--json", "queryport", "web")), &qp); err != nil || len(qp.Replies) != 3 {
		t.Fatalf("queryport --json: %v", err)
	}
	var accepted, bytes uint64
	for _, r := range qp.Replies {
		accepted += r.Result.Rules[0].Accepted
		bytes += r.Result.Rules[0].AcceptedBytes
	}
	if accepted == 0 || bytes < 54*accepted {
		t.Errorf("queryport: %d packets accepted in %d bytes", accepted, bytes)
	}
	out = ctl(0, "--target", "2", "display")
	for _, want := range []string{"host 2", "=== configuration ===", "heartbeat_period", "=== state ===", "=== port rules ===", "=== last"} {
		if !strings.Contains(out, want) {
			t.Errorf("display lacks %q:\n%s", want, out)
		}
	}
	ctl(2, "display") // --cluster without --target: which host?
}

// proxyInto listens on this namespace's loopback and forwards each
// connection to addr inside ns; it returns the local address.
func proxyInto(t *testing.T, ns *netns.NS, addr string) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	dial := func() (c net.Conn, err error) {
		err = ns.Do(func() error {
			c, err = net.DialTimeout("tcp", addr, 2*time.Second)
			return err
		})
		return c, err
	}
	// Wait for the server inside to listen.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := dial()
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nlbctl ui never listened on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				out, err := dial()
				if err != nil {
					return
				}
				defer out.Close()
				go io.Copy(out, in)
				io.Copy(in, out)
			}()
		}
	}()
	return l.Addr().String()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append(lines[:1], lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}
