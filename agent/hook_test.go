package agent

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/nlbproject/nlb/config"
)

// TestNotifyHook runs a real script per event: events arrive in order
// with their variables; a hanging run is killed with its children at the
// timeout; a full queue drops runs and counts them, and enqueueing never
// waits.
func TestNotifyHook(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "events.log")
	script := filepath.Join(dir, "hook.sh")
	os.WriteFile(script, []byte(`#!/bin/sh
if [ "$NLB_EVENT" = hang ]; then
	sleep 60 &
	echo $! > "$1.child"
	wait
fi
echo "$NLB_EVENT_SEQ $NLB_EVENT $NLB_EVENT_HOST $NLB_CLUSTER $NLB_HOST_ID $NLB_STATE [$NLB_EVENT_DETAIL] [$NLB_EVENT_SOURCE]" >> "$1"
[ "$NLB_EVENT" != fail ]
`), 0o755)
	n := &config.Notify{Command: []string{script, out}, Timeout: 500 * time.Millisecond}
	env := hookEnv{cluster: "test", hostID: 2, state: func() string { return "converged" }}
	h := newHookRunner(func() (*config.Notify, hookEnv) { return n, env }, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	r := newEventRing(time.Now())
	r.sink = h.enqueue
	r.add(time.Now(), "join", 3, "heard", "")
	r.add(time.Now(), "command", 2, "drainstop", "198.18.0.200 (admin key)")
	r.add(time.Now(), "fail", 2, "a failing run", "")
	r.add(time.Now(), "hang", 2, "a hanging run", "")
	r.add(time.Now(), "evict", 1, "no heartbeat", "")
	waitFor(t, 10*time.Second, func() bool { return h.Runs(HookOK)+h.Runs(HookFailed)+h.Runs(HookTimeout) == 5 })
	if h.Runs(HookOK) != 3 || h.Runs(HookFailed) != 1 || h.Runs(HookTimeout) != 1 {
		t.Fatalf("runs: ok %d failed %d timeout %d", h.Runs(HookOK), h.Runs(HookFailed), h.Runs(HookTimeout))
	}
	b, _ := os.ReadFile(out)
	want := "1 join 3 test 2 converged [heard] []\n" +
		"2 command 2 test 2 converged [drainstop] [198.18.0.200 (admin key)]\n" +
		"3 fail 2 test 2 converged [a failing run] []\n" +
		"5 evict 1 test 2 converged [no heartbeat] []\n"
	if string(b) != want {
		t.Fatalf("hook saw:\n%s\nwant:\n%s", b, want)
	}
	// The hanging run's child went with it.
	pb, err := os.ReadFile(out + ".child")
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(pb)))
	waitFor(t, 5*time.Second, func() bool { return syscall.Kill(pid, 0) != nil })

	// Only the kinds asked for run it.
	n2 := *n
	n2.Events = map[string]bool{"evict": true}
	n = &n2
	r.add(time.Now(), "join", 4, "heard", "")
	r.add(time.Now(), "evict", 4, "no heartbeat", "")
	waitFor(t, 5*time.Second, func() bool { return h.Runs(HookOK) == 4 })
	if b, _ := os.ReadFile(out); strings.Contains(string(b), " join 4 ") || !strings.Contains(string(b), "7 evict 4 ") {
		t.Fatalf("filtered kinds:\n%s", b)
	}

	// A flood of events while runs hang: enqueueing never waits, the
	// overflow is dropped and counted.
	n3 := *n
	n3.Events, n3.Timeout = nil, 2*time.Second
	n = &n3
	start := time.Now()
	for range HookQueue + 50 {
		r.add(time.Now(), "hang", 2, "", "")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("enqueueing %d events took %v", HookQueue+50, d)
	}
	if d := h.Runs(HookDropped); d < 49 || d > 50 {
		t.Fatalf("dropped %d, want 49..50 (the queue holds %d, one may be running)", d, HookQueue)
	}
}

func waitFor(t *testing.T, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
