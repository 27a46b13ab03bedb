package remote

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-hclog"
)

var testKey = DeriveKey([]byte("remote test cluster key 0123456789"))

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []*Message{
		{Kind: KindRequest, Command: CmdQuery, RequestID: 7, Timestamp: 123, Nonce: [16]byte{1, 2}},
		{Kind: KindRequest, Command: CmdDisable, Host: 3, Body: []byte(`{"rule":"all"}`), Timestamp: -5},
		{Kind: KindReply, Command: CmdParams, Status: StatusFailed, Host: 64, Body: bytes.Repeat([]byte("x"), MaxReplyBody)},
	} {
		b, err := Marshal(m, &testKey)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unmarshal(b, &testKey)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(m, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestUnmarshalErrors(t *testing.T) {
	good, _ := Marshal(&Message{Kind: KindRequest, Command: CmdQuery, Body: []byte(`{}`)}, &testKey)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	other := DeriveKey([]byte("another cluster key, also 32 bytes long"))
	for _, tc := range []struct {
		name string
		b    []byte
		key  *Key
		want error
	}{
		{"short", good[:HeaderLen+MACLen-1], &testKey, ErrShort},
		{"oversized", make([]byte, MaxDatagram+1), &testKey, ErrOversized},
		{"magic", mut(func(b []byte) []byte { b[0] = 'X'; return b }), &testKey, ErrMagic},
		{"version", mut(func(b []byte) []byte { b[4] = 9; return b }), &testKey, ErrVersion},
		{"kind", mut(func(b []byte) []byte { b[5] = 0; return b }), &testKey, ErrKind},
		{"length", mut(func(b []byte) []byte { b[19]++; return b }), &testKey, ErrLength},
		{"request body too large", mut(func(b []byte) []byte { b[18], b[19] = 0x10, 0; return b }), &testKey, ErrOversized},
		{"trailing byte", append(append([]byte(nil), good...), 0), &testKey, ErrLength},
		{"wrong key", good, &other, ErrAuth},
		{"flipped body", mut(func(b []byte) []byte { b[HeaderLen] ^= 1; return b }), &testKey, ErrAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Unmarshal(tc.b, tc.key); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func FuzzUnmarshal(f *testing.F) {
	good, _ := Marshal(&Message{Kind: KindRequest, Command: CmdQuery, Body: []byte(`{"rule":"80"}`)}, &testKey)
	f.Add(good)
	f.Add([]byte("NLBR"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b, nil)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes, tag aside.
		out, err := Marshal(m, nil)
		if err != nil {
			t.Fatalf("decoded message does not encode: %v", err)
		}
		n := len(out) - MACLen
		if !bytes.Equal(out[:n], b[:n]) {
			t.Fatalf("re-encoding differs")
		}
		g := NewGuard(testKey)
		g.Check(b, netip.MustParseAddr("198.18.0.1"), time.Now())
	})
}

func request(t *testing.T, cmd Command, key *Key, ts time.Time, nonce byte) []byte {
	t.Helper()
	b, err := Marshal(&Message{Kind: KindRequest, Command: cmd, Timestamp: ts.UnixNano(), Nonce: [16]byte{nonce}, RequestID: uint64(nonce)}, key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGuard(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	src := netip.MustParseAddr("198.18.0.50")
	other := DeriveKey([]byte("not the cluster key at all, 32 bytes"))
	g := NewGuard(testKey)
	steps := []struct {
		name string
		b    []byte
		want Refusal
	}{
		{"valid", request(t, CmdQuery, &testKey, now, 1), RefusedNone},
		{"replayed", request(t, CmdQuery, &testKey, now, 1), RefusedReplay},
		{"wrong key", request(t, CmdQuery, &other, now, 2), RefusedAuth},
		{"stale", request(t, CmdQuery, &testKey, now.Add(-MaxSkew-time.Second), 3), RefusedStale},
		{"future", request(t, CmdQuery, &testKey, now.Add(MaxSkew+time.Second), 4), RefusedStale},
		{"unknown command", request(t, Command(200), &testKey, now, 5), RefusedUnknown},
		{"garbage", []byte("hello"), RefusedMalformed},
		{"skewed but inside", request(t, CmdStop, &testKey, now.Add(MaxSkew-time.Second), 6), RefusedNone},
	}
	for _, s := range steps {
		if _, got := g.Check(s.b, src, now); got != s.want {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
	c := g.Counts()
	for r, want := range map[Refusal]uint64{RefusedReplay: 1, RefusedAuth: 1, RefusedStale: 2, RefusedUnknown: 1, RefusedMalformed: 1} {
		if c[r] != want {
			t.Errorf("count %v = %d, want %d", r, c[r], want)
		}
	}
	// A reply sent to the server is not a request.
	rep, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery}, &testKey)
	if _, got := g.Check(rep, src, now); got != RefusedNotRequest {
		t.Errorf("reply: got %v", got)
	}
	// The nonce is forgotten only once its timestamp is stale anyway.
	later := now.Add(2*MaxSkew + 2*time.Second)
	if _, got := g.Check(request(t, CmdQuery, &testKey, now, 1), src, later); got != RefusedStale {
		t.Errorf("replay after the window: got %v, want stale", got)
	}
}

// TestGuardNonceOutlivesSkew: a request stamped ahead of the receiver's
// clock stays fresh until its timestamp plus MaxSkew, so its nonce must be
// kept that long (2 × MaxSkew from its arrival, at worst); a replay just
// before it goes stale is refused as a replay.
func TestGuardNonceOutlivesSkew(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	src := netip.MustParseAddr("198.18.0.50")
	g := NewGuard(testKey)
	ahead := now.Add(MaxSkew - time.Second)
	req := request(t, CmdStop, &testKey, ahead, 9)
	if _, got := g.Check(req, src, now); got != RefusedNone {
		t.Fatalf("request stamped %v ahead: %v", MaxSkew-time.Second, got)
	}
	// Walk the clock in steps (pruning runs as time passes) to just
	// before the timestamp goes stale.
	for at := now.Add(time.Second); at.Before(ahead.Add(MaxSkew)); at = at.Add(3 * time.Second) {
		g.Check([]byte("x"), netip.MustParseAddr("198.18.0.51"), at)
	}
	last := ahead.Add(MaxSkew - time.Second)
	if _, got := g.Check(req, src, last); got != RefusedReplay {
		t.Fatalf("replay %v after arrival, %v before the timestamp is stale: %v, want %v",
			last.Sub(now), time.Second, got, RefusedReplay)
	}
}

func TestGuardRateLimit(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := NewGuard(testKey)
	a, b := netip.MustParseAddr("198.18.0.50"), netip.MustParseAddr("198.18.0.51")
	limited := 0
	for i := range RateBurst + 10 {
		if _, r := g.Check([]byte("x"), a, now); r == RefusedRateLimit {
			limited++
		} else if i >= RateBurst {
			t.Fatalf("request %d passed the rate limit", i)
		}
	}
	if limited != 10 {
		t.Fatalf("%d limited, want 10", limited)
	}
	if _, r := g.Check([]byte("x"), b, now); r == RefusedRateLimit {
		t.Fatal("another source was limited")
	}
	// Tokens come back with time.
	if _, r := g.Check([]byte("x"), a, now.Add(time.Second)); r == RefusedRateLimit {
		t.Fatal("still limited a second later")
	}
}

// fakeHandler records commands.
type fakeHandler struct {
	got []Command
}

func (f *fakeHandler) Identity() (uint8, string, []uint8) { return 2, "converged", []uint8{1, 2, 3} }

func (f *fakeHandler) Handle(_ context.Context, c Command, a Args) (any, error) {
	f.got = append(f.got, c)
	switch c {
	case CmdDisable:
		if a.Rule == "nope" {
			return nil, errors.New("no port rule \"nope\"")
		}
		return map[string]string{"rule": a.Rule}, nil
	}
	return map[string]int{"epoch": 4}, nil
}

func decodeReply(t *testing.T, b []byte, key *Key) (*Message, Reply) {
	t.Helper()
	m, err := Unmarshal(b, key)
	if err != nil {
		t.Fatalf("reply: %v", err)
	}
	var r Reply
	if err := json.Unmarshal(m.Body, &r); err != nil {
		t.Fatal(err)
	}
	return m, r
}

func TestServerDispatch(t *testing.T) {
	h := &fakeHandler{}
	s := NewServer(testKey, h, hclog.NewNullLogger())
	src := netip.MustParseAddr("198.18.0.50")
	now := time.Now()
	ctx := context.Background()

	m, r := decodeReply(t, s.handleDatagram(ctx, request(t, CmdQuery, &testKey, now, 1), src, now), &testKey)
	if m.Status != StatusOK || r.Host != 2 || r.State != "converged" || string(r.Result) != `{"epoch":4}` || m.RequestID != 1 {
		t.Fatalf("query reply: %+v %+v", m, r)
	}
	// A failing command is reported, authenticated.
	req, _ := Marshal(&Message{Kind: KindRequest, Command: CmdDisable, Timestamp: now.UnixNano(), Nonce: [16]byte{2}, Body: []byte(`{"rule":"nope"}`)}, &testKey)
	m, r = decodeReply(t, s.handleDatagram(ctx, req, src, now), &testKey)
	if m.Status != StatusFailed || r.Error != `no port rule "nope"` {
		t.Fatalf("failed command: %+v %+v", m, r)
	}
	// Another host's request is not answered, nor executed.
	req, _ = Marshal(&Message{Kind: KindRequest, Command: CmdStop, Host: 3, Timestamp: now.UnixNano(), Nonce: [16]byte{3}}, &testKey)
	if out := s.handleDatagram(ctx, req, src, now); out != nil {
		t.Fatal("answered a request for host 3")
	}
	// Wrong key: refused, unauthenticated, not executed.
	other := DeriveKey([]byte("not the cluster key at all, 32 bytes"))
	m, r = decodeReply(t, s.handleDatagram(ctx, request(t, CmdStop, &other, now, 4), src, now), nil)
	if m.Status != StatusRefused || r.Error != "refused: bad-auth" {
		t.Fatalf("wrong key: %+v %+v", m, r)
	}
	if _, err := Unmarshal(s.handleDatagram(ctx, request(t, CmdStop, &other, now, 5), src, now), &testKey); !errors.Is(err, ErrAuth) {
		t.Fatal("a refusal must not carry a valid tag")
	}
	// Replay: refused.
	m, _ = decodeReply(t, s.handleDatagram(ctx, request(t, CmdQuery, &testKey, now, 1), src, now), nil)
	if m.Status != StatusRefused {
		t.Fatalf("replay: %v", m.Status)
	}
	// Malformed: silence.
	if out := s.handleDatagram(ctx, []byte("NLBR garbage"), src, now); out != nil {
		t.Fatal("answered garbage")
	}
	if diff := cmp.Diff([]Command{CmdQuery, CmdDisable}, h.got); diff != "" {
		t.Fatalf("executed (-want +got):\n%s", diff)
	}
	// Answered requests are counted per command and outcome; refusals
	// only by the guard.
	if s.Replies(CmdQuery, StatusOK) != 1 || s.Replies(CmdDisable, StatusFailed) != 1 ||
		s.Replies(CmdStop, StatusOK)+s.Replies(CmdStop, StatusFailed) != 0 || s.Replies(CmdStop, StatusRefused) != 0 {
		t.Fatalf("replies: query ok %d, disable failed %d, stop %d/%d", s.Replies(CmdQuery, StatusOK),
			s.Replies(CmdDisable, StatusFailed), s.Replies(CmdStop, StatusOK), s.Replies(CmdStop, StatusFailed))
	}
}

func TestGatherExpectsPeers(t *testing.T) {
	req, _ := newRequest(0, CmdQuery, Args{})
	g := newGather(req, 0)
	add := func(host uint8, st Status, peers []uint8) {
		body, _ := json.Marshal(Reply{Host: host, State: "converged", Peers: peers})
		b, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: st, RequestID: req.RequestID, Host: host, Nonce: req.Nonce, Body: body}, &testKey)
		g.add(b, &testKey)
	}
	add(1, StatusOK, []uint8{1, 2, 3})
	if g.complete() {
		t.Fatal("complete with one of three replies")
	}
	add(3, StatusOK, []uint8{1, 2, 3})
	// A forged reply (wrong key) does not count.
	body, _ := json.Marshal(Reply{Host: 2})
	forged, _ := Marshal(&Message{Kind: KindReply, Status: StatusOK, RequestID: req.RequestID, Host: 2, Nonce: req.Nonce, Body: body}, &Key{})
	g.add(forged, &testKey)
	res := g.result()
	if len(res.Replies) != 2 || !cmp.Equal(res.Missing, []uint8{2}) {
		t.Fatalf("result: %+v", res)
	}
	add(2, StatusOK, []uint8{1, 2, 3})
	if !g.complete() {
		t.Fatal("not complete with all three")
	}
	// Sent to one host's own address: its peers are not expected.
	g = newGather(req, 0)
	g.oneHost = true
	add(2, StatusOK, []uint8{1, 2, 3})
	if !g.complete() || len(g.result().Missing) != 0 {
		t.Fatalf("one host: %+v", g.result())
	}
}

func TestLocalSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nlbd.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHandler{}
	s := NewServer(testKey, h, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeLocal(ctx, l) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	res, err := DoLocal(rctx, path, CmdDisable, Args{Rule: "80"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Replies) != 1 || res.Replies[0].Status != StatusOK || string(res.Replies[0].Result) != `{"rule":"80"}` {
		t.Fatalf("local reply: %+v", res)
	}
}
