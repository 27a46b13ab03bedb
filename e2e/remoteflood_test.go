//go:build linux

package e2e

import (
	"encoding/json"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/remote"
)

// TestSpoofedRemoteFlood: a machine on the segment floods the cluster's
// remote-control port from spoofed sources (forged requests, and replays
// of a captured authentic one) at more than 10 000 datagrams a second;
// meanwhile the operator's nlbctl query gets every host's answer, and
// every host counts the forgeries and replays as such.
func TestSpoofedRemoteFlood(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{Clients: 2})
	startAll(t, c, all3)
	nlbctl := buildNlbctl(t)
	dst, err := macmode.UnicastMAC(cluster.VIP)
	if err != nil {
		t.Fatal(err)
	}
	// A captured authentic request (it ran once, when it was sent).
	captured, err := remote.Marshal(&remote.Message{Kind: remote.KindRequest, Command: remote.CmdQuery, Role: remote.RoleAdmin,
		Dest: cluster.VIP, Timestamp: time.Now().UnixNano(), Nonce: [16]byte{7, 7}, RequestID: 77}, &c.Key)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := remote.Marshal(&remote.Message{Kind: remote.KindRequest, Command: remote.CmdStop, Role: remote.RoleAdmin,
		Dest: cluster.VIP, Timestamp: time.Now().UnixNano(), Nonce: [16]byte{8}}, &remote.Key{1})
	r := rand.New(rand.NewPCG(3, 3))
	const n = 80_000
	frames := make([][]byte, 0, n)
	for i := range n {
		payload := forged
		if i%2 == 1 {
			payload = captured
		}
		src := netip.AddrFrom4([4]byte{198, 19, byte(r.IntN(256)), byte(1 + r.IntN(254))})
		f := (&filter.Packet{Src: src, Dst: cluster.VIP, Proto: 17, SPort: uint16(1024 + r.IntN(60000)),
			DPort: remote.DefaultPort, Payload: payload}).Frame()
		copy(f[0:6], dst)
		copy(f[6:12], []byte{0x02, 0x66, 0, 0, byte(i >> 8), byte(i)})
		frames = append(frames, f)
	}
	before := scrapeAll(t, c)
	var wg sync.WaitGroup
	var sent int
	var took time.Duration
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		sent, err = c.Clients[1].SendRaw(frames, 4*time.Second)
		took = time.Since(start)
	}()
	time.Sleep(300 * time.Millisecond) // the flood is on
	out, code := nlbctlIn(t, c.Clients[0], nlbctl, "--cluster", cluster.VIP.String(), "--key-file", c.KeyFile, "--timeout", "2s", "query")
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	rate := float64(sent) / took.Seconds()
	t.Logf("flood: %d spoofed datagrams in %v (%.0f/s); operator's query during it: exit %d", sent, took.Round(time.Millisecond), rate, code)
	if rate < 10_000 {
		t.Fatalf("the flood reached only %.0f datagrams/s: the test needs at least 10 000/s to mean anything", rate)
	}
	if code != 0 {
		t.Fatalf("the operator's query during the flood: exit %d\n%s", code, out)
	}
	time.Sleep(500 * time.Millisecond)
	after := scrapeAll(t, c)
	for _, id := range all3 {
		delta := func(reason string) float64 {
			a, _ := after[id].Value("nlb_remote_refused_total", "reason", reason)
			b, _ := before[id].Value("nlb_remote_refused_total", "reason", reason)
			return a - b
		}
		t.Logf("host %d refused: bad-auth %.0f, replay %.0f, rate-limited %.0f", id, delta("bad-auth"), delta("replay"), delta("rate-limited"))
		// Under the flood the host's UDP socket buffer overflows (the
		// kernel drops and counts those); what the agent read, it refused
		// and counted, half forged and half replayed, with no source
		// rate-limited (no state was kept for any of them).
		auth, replay := delta("bad-auth"), delta("replay")
		if auth+replay < float64(sent)/2 || auth < 0.9*replay || replay < 0.9*auth || delta("rate-limited") != 0 {
			t.Errorf("host %d did not count the flood as forgeries and replays", id)
		}
		if q, err := c.Query(id); err != nil || q.State == "stopped" {
			t.Errorf("host %d after the flood: %v %v", id, q, err)
		}
		// The event history records refusals at the rate the log does
		// (one per reason per 10 s): the flood cannot wash it out.
		a, _ := after[id].Value("nlb_events_total")
		b, _ := before[id].Value("nlb_events_total")
		var er remote.EventsResult
		r, err := c.Local(id, remote.CmdEvents, remote.Args{Limit: 1})
		if err != nil || json.Unmarshal(r.Result, &er) != nil {
			t.Fatalf("host %d events: %v", id, err)
		}
		t.Logf("host %d: %.0f events during the flood, oldest kept %d", id, a-b, er.First)
		if a-b > 6 || er.First != 1 {
			t.Errorf("host %d: the flood added %.0f events (want at most a refusal per reason per 10 s); oldest kept %d, want 1", id, a-b, er.First)
		}
	}
}
