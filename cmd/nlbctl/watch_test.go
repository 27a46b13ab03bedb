package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	inetns "github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// TestDrawWatch: rates come from the difference of two queries; a host
// that does not answer is shown, and so are failing health checks.
func TestDrawWatch(t *testing.T) {
	reply := func(id uint8, acc, drop uint64, health string) remote.HostReply {
		q := remote.QueryResult{Host: id, State: "converged", Epoch: 3, LeaseValid: true, Accepted: acc, Dropped: drop,
			Owned: map[string]int{"default": 0, "web": 1024, "dns": 1024}}
		if health != "" {
			q.Health = map[string]string{"web": health}
			q.Silent = []remote.SilentPeer{{Host: 4, SilentMS: 2300, LeaseExpired: true, Evicted: true}}
		}
		b, _ := json.Marshal(q)
		return remote.HostReply{Status: remote.StatusOK, Reply: remote.Reply{Host: id, Result: b}}
	}
	t0 := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	var out strings.Builder
	prev := drawWatch(&out, &remote.Result{Replies: []remote.HostReply{reply(2, 100, 50, ""), reply(1, 0, 0, "")}}, nil, t0)
	out.Reset()
	drawWatch(&out, &remote.Result{Replies: []remote.HostReply{reply(1, 500, 1000, "down: http 503"), reply(2, 300, 50, "")},
		Missing: []uint8{3}}, prev, t0.Add(2*time.Second))
	got := out.String()
	for _, want := range []string{
		"1     converged  3      25.0%  250         500        health web: down: http 503",
		"2     converged  3      25.0%  100         0          -",
		"3     no answer",
		"4     no answer  -      -      -           -          silent 2.3s to host 1; lease expired; evicted",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("watch output lacks %q:\n%s", want, got)
		}
	}
}

// TestWatchExitsLikeQuery: watch --count 1 with nobody answering exits 3,
// as query does, so that a script can tell. It asks a dedicated IP in a
// namespace of its own, where nothing listens.
func TestWatchExitsLikeQuery(t *testing.T) {
	inetns.RequireRoot(t)
	ns := inetns.New(t, "watch")
	h := ns.Netlink(t)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	inetns.Addr(t, h, lo, "198.18.7.1/32")
	key := filepath.Join(t.TempDir(), "k")
	os.WriteFile(key, bytes.Repeat([]byte("k"), 32), 0o600)
	for _, cmd := range [][]string{{"query"}, {"watch", "--count", "1"}} {
		args := append([]string{"--host", "198.18.7.1", "--key-file", key, "--timeout", "200ms"}, cmd...)
		var code int
		var errOut string
		ns.Do(func() error { code, _, errOut = runCtl(args...); return nil })
		if code != 3 {
			t.Errorf("%v with nobody answering: exit %d, want 3 (%s)", cmd, code, errOut)
		}
	}
}

func TestParseSince(t *testing.T) {
	for _, c := range []struct {
		in      string
		seq     uint64
		timed   bool
		isUsage bool
	}{
		{"", 0, false, false}, {"42", 42, false, false}, {"10m", 0, true, false}, {"90s", 0, true, false},
		{"-5m", 0, false, true}, {"0s", 0, false, true}, {"yesterday", 0, false, true}, {"4.5", 0, false, true},
	} {
		seq, at, err := parseSince(c.in)
		var u usageError
		if isU := errors.As(err, &u); isU != c.isUsage || seq != c.seq || (at != 0) != c.timed {
			t.Errorf("%q: seq %d time %d err %v", c.in, seq, at, err)
		}
		if c.timed && (time.Since(time.Unix(0, at)) < time.Minute/2 || time.Since(time.Unix(0, at)) > time.Hour) {
			t.Errorf("%q: time %v", c.in, time.Unix(0, at))
		}
	}
}
