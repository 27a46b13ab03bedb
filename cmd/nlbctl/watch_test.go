package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

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
