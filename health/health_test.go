package health

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestTracker(t *testing.T) {
	for _, tc := range []struct {
		name       string
		rise, fall int
		results    string // p = pass, f = fail
		want       string // state after each result: u, d
	}{
		{"first pass decides", 2, 3, "p", "u"},
		{"first fail decides", 2, 3, "f", "d"},
		{"fall needs 3 in a row", 2, 3, "pffpfff", "uuuuuud"},
		{"rise needs 2 in a row", 2, 3, "fpfpp", "ddddu"},
		{"flapping stays put", 2, 2, "pfpfpfpf", "uuuuuuuu"},
		{"thresholds of 1", 1, 1, "pfpf", "udud"},
		{"zero thresholds act as 1", 0, 0, "pf", "ud"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &Tracker{Rise: tc.rise, Fall: tc.fall}
			got := ""
			for _, r := range tc.results {
				tr.Observe(r == 'p')
				if tr.Up() {
					got += "u"
				} else {
					got += "d"
				}
			}
			if got != tc.want {
				t.Fatalf("results %s: states %s, want %s", tc.results, got, tc.want)
			}
		})
	}
	var tr Tracker
	if tr.Up() || tr.Known() {
		t.Fatal("a check with no result must count as down and unknown")
	}
}

func TestProbe(t *testing.T) {
	srv, status := statusServer(t, 200)
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tls.Close()
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()
	silent, _ := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers HTTP
	defer silent.Close()

	ctx := context.Background()
	check := func(c Check, wantErr string) {
		t.Helper()
		if c.Timeout == 0 {
			c.Timeout = 300 * time.Millisecond
		}
		err := c.Probe(ctx)
		switch {
		case wantErr == "" && err != nil:
			t.Errorf("%s %s: %v, want pass", c.Kind, c.Target, err)
		case wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)):
			t.Errorf("%s %s: %v, want an error containing %q", c.Kind, c.Target, err, wantErr)
		}
	}
	check(Check{Kind: KindTCP, Target: srv.Listener.Addr().String()}, "")
	check(Check{Kind: KindTCP, Target: closedAddr}, "connection refused")
	check(Check{Kind: KindHTTP, Target: srv.URL}, "")
	status.Store(503)
	check(Check{Kind: KindHTTP, Target: srv.URL}, "http 503")
	status.Store(301)
	check(Check{Kind: KindHTTP, Target: srv.URL}, "") // 200–399 by default
	check(Check{Kind: KindHTTP, Target: srv.URL, Expect: 200}, "http 301")
	// The default range ends at 399: a 4xx is a failure, 200 and 399 pass.
	for _, code := range []int32{400, 404, 499} {
		status.Store(code)
		check(Check{Kind: KindHTTP, Target: srv.URL}, fmt.Sprintf("http %d", code))
	}
	status.Store(399)
	check(Check{Kind: KindHTTP, Target: srv.URL}, "")
	status.Store(404)
	check(Check{Kind: KindHTTP, Target: srv.URL, Expect: 404}, "") // expect overrides the range
	check(Check{Kind: KindHTTPS, Target: tls.URL}, "")             // self-signed: not verified
	check(Check{Kind: KindHTTP, Target: "http://" + silent.Addr().String() + "/"}, "timeout")
	check(Check{Kind: KindExec, Command: []string{"true"}}, "")
	check(Check{Kind: KindExec, Command: []string{"sh", "-c", "exit 3"}}, "exec exit 3")
	check(Check{Kind: KindExec, Command: []string{"sleep", "5"}, Timeout: 100 * time.Millisecond}, "timeout")
}

// TestRunner: a check against a real server goes down when it fails and
// up again after rise passes, reporting each change once with its detail.
func TestRunner(t *testing.T) {
	srv, status := statusServer(t, 200)
	type change struct {
		up     bool
		detail string
	}
	changes := make(chan change, 16)
	r := NewRunner([]*Check{{Rule: "web", Kind: KindHTTP, Target: srv.URL, Interval: 20 * time.Millisecond,
		Timeout: time.Second, Rise: 2, Fall: 2}})
	r.OnChange = func(rule string, up bool, detail string) {
		if rule != "web" {
			t.Errorf("change for rule %q", rule)
		}
		changes <- change{up, detail}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	next := func(want change) {
		t.Helper()
		select {
		case c := <-changes:
			if c != want {
				t.Fatalf("change %+v, want %+v", c, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no change to %+v", want)
		}
	}
	next(change{true, ""})
	status.Store(503)
	next(change{false, "http 503"})
	if s := r.Snapshot()[0]; s.Up || s.Detail != "http 503" || s.Failed < 2 {
		t.Fatalf("snapshot while down: %+v", s)
	}
	status.Store(200)
	next(change{true, ""})
	if s := r.Snapshot()[0]; !s.Up || s.Detail != "" || s.Passed < 3 {
		t.Fatalf("snapshot after recovery: %+v", s)
	}
}

// TestPrime: a primed runner knows each check's state before Run, and
// Run reports only later changes.
func TestPrime(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer ok.Close()
	sick, status := statusServer(t, 503)
	r := NewRunner([]*Check{
		{Rule: "a", Kind: KindHTTP, Target: ok.URL, Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1},
		{Rule: "b", Kind: KindHTTP, Target: sick.URL, Interval: 20 * time.Millisecond, Timeout: time.Second, Rise: 1, Fall: 1},
	})
	if down := r.Prime(context.Background()); len(down) != 1 || down[0] != "b" {
		t.Fatalf("primed: down %v, want [b]", down)
	}
	if s := r.Status("b"); !s.Known || s.Up || s.Detail != "http 503" {
		t.Fatalf("b after prime: %+v", s)
	}
	changes := make(chan string, 8)
	r.OnChange = func(rule string, up bool, _ string) { changes <- fmt.Sprintf("%s %v", rule, up) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	status.Store(200)
	select {
	case c := <-changes:
		if c != "b true" {
			t.Fatalf("first change after prime: %s, want b true", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("b never came up")
	}
}

// statusServer answers every request with the status it holds (set it
// through the returned pointer); it closes when the test ends.
func statusServer(t *testing.T, initial int32) (*httptest.Server, *atomic.Int32) {
	var status atomic.Int32
	status.Store(initial)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	t.Cleanup(srv.Close)
	return srv, &status
}
