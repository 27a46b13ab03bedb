package remote

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/hashicorp/go-hclog"
)

var (
	testKey     = DeriveKey([]byte("remote test cluster key 0123456789"), RoleAdmin)
	monitorKey  = DeriveKey([]byte("remote test monitor key 0123456789"), RoleMonitor)
	nextKey     = DeriveKey([]byte("remote test next admin key 0123456"), RoleAdmin)
	testKeys    = Keys{Admin: Keyring{testKey, nextKey}, Monitor: Keyring{monitorKey}}
	vip         = netip.MustParseAddr("198.18.0.100")
	host2       = netip.MustParseAddr("198.18.1.2")
	host3       = netip.MustParseAddr("198.18.1.3")
	local2      = Local{Addrs: []netip.Addr{vip, host2}, HostID: 2}
	local3      = Local{Addrs: []netip.Addr{vip, host3}, HostID: 3}
	operatorSrc = netip.MustParseAddr("198.18.0.50")
	start       = time.Unix(1_800_000_000, 0)
)

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []*Message{
		{Kind: KindRequest, Command: CmdQuery, RequestID: 7, Timestamp: 123, Nonce: [16]byte{1, 2}, Role: RoleMonitor, Dest: vip},
		{Kind: KindRequest, Command: CmdDisable, Host: 3, Body: []byte(`{"rule":"all"}`), Timestamp: -5, Role: RoleAdmin, Dest: host3},
		{Kind: KindReply, Command: CmdParams, Status: StatusFailed, Host: 64, Body: bytes.Repeat([]byte("x"), MaxReplyBody)},
		{Kind: KindReply, Command: CmdStop, Status: StatusReplay, Host: 2, Role: RoleAdmin, Dest: vip},
	} {
		b, err := Marshal(m, &testKey)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unmarshal(b, &testKey)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(m, got, cmpopts.EquateEmpty(), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
}

func TestUnmarshalErrors(t *testing.T) {
	good, _ := Marshal(&Message{Kind: KindRequest, Command: CmdQuery, Body: []byte(`{}`)}, &testKey)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	other := DeriveKey([]byte("another cluster key, also 32 bytes long"), RoleAdmin)
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
		{"role", mut(func(b []byte) []byte { b[17] = 3; return b }), &testKey, ErrRole},
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
		g := NewGuard(testKeys, local2, start)
		g.Check(b, vip, operatorSrc, start)
	})
}

// request is an admin request to the cluster VIP, for every host.
func request(t *testing.T, cmd Command, key *Key, ts time.Time, nonce byte) []byte {
	t.Helper()
	return requestTo(t, cmd, key, RoleAdmin, vip, 0, ts, nonce)
}

func requestTo(t *testing.T, cmd Command, key *Key, role Role, dest netip.Addr, target uint8, ts time.Time, nonce byte) []byte {
	t.Helper()
	b, err := Marshal(&Message{Kind: KindRequest, Command: cmd, Role: role, Dest: dest, Host: target,
		Timestamp: ts.UnixNano(), Nonce: [16]byte{nonce}, RequestID: uint64(nonce)}, key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGuard(t *testing.T) {
	now := start.Add(time.Minute)
	other := DeriveKey([]byte("not the cluster key at all, 32 bytes"), RoleAdmin)
	g := NewGuard(testKeys, local2, start)
	steps := []struct {
		name string
		b    []byte
		dst  netip.Addr
		want Refusal
	}{
		{"valid", request(t, CmdQuery, &testKey, now, 1), vip, RefusedNone},
		{"replayed", request(t, CmdQuery, &testKey, now, 1), vip, RefusedReplay},
		{"wrong key", request(t, CmdQuery, &other, now, 2), vip, RefusedAuth},
		{"admin role, monitor key", requestTo(t, CmdQuery, &monitorKey, RoleAdmin, vip, 0, now, 20), vip, RefusedAuth},
		{"stale", request(t, CmdQuery, &testKey, now.Add(-MaxSkew-time.Second), 3), vip, RefusedStale},
		{"future", request(t, CmdQuery, &testKey, now.Add(MaxSkew+time.Second), 4), vip, RefusedStale},
		{"stamped before the agent started", request(t, CmdQuery, &testKey, start.Add(-time.Second), 21), vip, RefusedStale},
		{"unknown command", request(t, Command(200), &testKey, now, 5), vip, RefusedUnknown},
		{"garbage", []byte("hello"), vip, RefusedMalformed},
		{"skewed but inside", request(t, CmdStop, &testKey, now.Add(MaxSkew-time.Second), 6), vip, RefusedNone},
		{"next key of the keyring", request(t, CmdStop, &nextKey, now, 7), vip, RefusedNone},
		{"sent to host 3's address", requestTo(t, CmdStop, &testKey, RoleAdmin, host3, 0, now, 8), host3, RefusedMisdirected},
		{"sent to host 3, arrived at our VIP", requestTo(t, CmdStop, &testKey, RoleAdmin, host3, 0, now, 9), vip, RefusedMisdirected},
		{"for host 3 by ID", requestTo(t, CmdStop, &testKey, RoleAdmin, vip, 3, now, 10), vip, RefusedMisdirected},
		{"for us by ID", requestTo(t, CmdStop, &testKey, RoleAdmin, vip, 2, now, 11), vip, RefusedNone},
		{"to our own address", requestTo(t, CmdStop, &testKey, RoleAdmin, host2, 0, now, 12), host2, RefusedNone},
		{"monitor query", requestTo(t, CmdQuery, &monitorKey, RoleMonitor, vip, 0, now, 13), vip, RefusedNone},
		{"monitor stop", requestTo(t, CmdStop, &monitorKey, RoleMonitor, vip, 0, now, 14), vip, RefusedForbidden},
	}
	for _, s := range steps {
		if _, _, got := g.Check(s.b, s.dst, operatorSrc, now); got != s.want {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
	c := g.Counts()
	for r, want := range map[Refusal]uint64{RefusedReplay: 1, RefusedAuth: 2, RefusedStale: 3, RefusedUnknown: 1,
		RefusedMalformed: 1, RefusedMisdirected: 3, RefusedForbidden: 1} {
		if c[r] != want {
			t.Errorf("count %v = %d, want %d", r, c[r], want)
		}
	}
	// A reply sent to the server is not a request.
	rep, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Role: RoleAdmin, Dest: vip}, &testKey)
	if _, _, got := g.Check(rep, vip, operatorSrc, now); got != RefusedNotRequest {
		t.Errorf("reply: got %v", got)
	}
}

// TestGuardNonceOutlivesSkew: a request stamped ahead of the receiver's
// clock stays fresh until its timestamp plus MaxSkew, so its nonce must be
// kept that long (2 × MaxSkew from its arrival, at worst); a replay just
// before it goes stale is refused as a replay.
func TestGuardNonceOutlivesSkew(t *testing.T) {
	now := start.Add(time.Minute)
	g := NewGuard(testKeys, local2, start)
	ahead := now.Add(MaxSkew - time.Second)
	req := request(t, CmdStop, &testKey, ahead, 9)
	if _, _, got := g.Check(req, vip, operatorSrc, now); got != RefusedNone {
		t.Fatalf("request stamped %v ahead: %v", MaxSkew-time.Second, got)
	}
	// Walk the clock in steps (pruning runs as time passes) to just
	// before the timestamp goes stale.
	for at := now.Add(time.Second); at.Before(ahead.Add(MaxSkew)); at = at.Add(3 * time.Second) {
		g.Check([]byte("x"), vip, operatorSrc, at)
	}
	last := ahead.Add(MaxSkew - time.Second)
	if _, _, got := g.Check(req, vip, operatorSrc, last); got != RefusedReplay {
		t.Fatalf("replay %v after arrival, %v before the timestamp is stale: %v, want %v",
			last.Sub(now), time.Second, got, RefusedReplay)
	}
}

// TestGuardRateLimit: each source's fresh authentic requests are
// rate-limited; tokens come back with time.
func TestGuardRateLimit(t *testing.T) {
	now := start.Add(time.Minute)
	g := NewGuard(testKeys, local2, start)
	a, b := netip.MustParseAddr("198.18.0.50"), netip.MustParseAddr("198.18.0.51")
	limited := 0
	nonce := 0
	next := func(src netip.Addr, at time.Time) Refusal {
		nonce++
		m := &Message{Kind: KindRequest, Command: CmdQuery, Role: RoleAdmin, Dest: vip, Timestamp: at.UnixNano(), RequestID: uint64(nonce)}
		binary.BigEndian.PutUint64(m.Nonce[:], uint64(nonce))
		req, _ := Marshal(m, &testKey)
		_, _, r := g.Check(req, vip, src, at)
		return r
	}
	for i := range RateBurst + 10 {
		if r := next(a, now); r == RefusedRateLimit {
			limited++
		} else if i >= RateBurst {
			t.Fatalf("request %d passed the rate limit", i)
		}
	}
	if limited != 10 {
		t.Fatalf("%d limited, want 10", limited)
	}
	if r := next(b, now); r != RefusedNone {
		t.Fatalf("another source: %v", r)
	}
	if r := next(a, now.Add(time.Second)); r != RefusedNone {
		t.Fatalf("a second later: %v", r)
	}
}

// TestSpoofedFloodNoLockout: a flood of forged datagrams and of replays
// of a captured request, from 20 000 spoofed sources, keeps no state: the
// operator's next request runs.
func TestSpoofedFloodNoLockout(t *testing.T) {
	now := start.Add(time.Minute)
	g := NewGuard(testKeys, local2, start)
	captured := request(t, CmdStop, &testKey, now, 1)
	if _, _, r := g.Check(captured, vip, operatorSrc, now); r != RefusedNone {
		t.Fatal(r)
	}
	forged := request(t, CmdStop, &Key{1}, now, 2)
	for i := 0; i < 20000; i++ {
		src := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		g.Check(forged, vip, src, now)
		g.Check(captured, vip, src, now)
	}
	if n := len(g.sources); n > 1 {
		t.Fatalf("the flood left %d sources in the rate limiter", n)
	}
	if _, _, r := g.Check(request(t, CmdQuery, &testKey, now, 3), vip, netip.MustParseAddr("198.18.0.77"), now); r != RefusedNone {
		t.Fatalf("operator's request during the flood: %v", r)
	}
	c := g.Counts()
	if c[RefusedAuth] != 20000 || c[RefusedReplay] != 20000 {
		t.Fatalf("counts %v", c)
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
	s := NewServer(testKeys, local2, start, h, hclog.NewNullLogger())
	src := operatorSrc
	now := start.Add(time.Minute)
	ctx := context.Background()

	m, r := decodeReply(t, s.handleDatagram(ctx, request(t, CmdQuery, &testKey, now, 1), vip, src, now), &testKey)
	if m.Status != StatusOK || r.Host != 2 || r.State != "converged" || string(r.Result) != `{"epoch":4}` || m.RequestID != 1 ||
		m.Dest != vip || m.Role != RoleAdmin || m.Timestamp != 0 {
		t.Fatalf("query reply: %+v %+v", m, r)
	}
	// A failing command is reported, authenticated.
	req, _ := Marshal(&Message{Kind: KindRequest, Command: CmdDisable, Role: RoleAdmin, Dest: vip, Timestamp: now.UnixNano(), Nonce: [16]byte{2}, Body: []byte(`{"rule":"nope"}`)}, &testKey)
	m, r = decodeReply(t, s.handleDatagram(ctx, req, vip, src, now), &testKey)
	if m.Status != StatusFailed || r.Error != `no port rule "nope"` {
		t.Fatalf("failed command: %+v %+v", m, r)
	}
	// Another host's request is not answered, nor executed.
	if out := s.handleDatagram(ctx, requestTo(t, CmdStop, &testKey, RoleAdmin, vip, 3, now, 3), vip, src, now); out != nil {
		t.Fatal("answered a request for host 3")
	}
	// Wrong key: nothing at all.
	other := DeriveKey([]byte("not the cluster key at all, 32 bytes"), RoleAdmin)
	if out := s.handleDatagram(ctx, request(t, CmdStop, &other, now, 4), vip, src, now); out != nil {
		t.Fatalf("answered a request with a wrong key (%d bytes)", len(out))
	}
	// Replay: a tagged refusal, no body, no larger than the request.
	replayed := request(t, CmdQuery, &testKey, now, 1)
	out := s.handleDatagram(ctx, replayed, vip, src, now)
	m, err := Unmarshal(out, &testKey)
	if err != nil || m.Status != StatusReplay || len(m.Body) != 0 || len(out) > len(replayed) || m.Timestamp != 0 {
		t.Fatalf("replay answer: %v %+v (%d bytes for %d)", err, m, len(out), len(replayed))
	}
	// Monitor key: query runs, stop is forbidden.
	m, _ = decodeReply(t, s.handleDatagram(ctx, requestTo(t, CmdQuery, &monitorKey, RoleMonitor, vip, 0, now, 5), vip, src, now), &monitorKey)
	if m.Status != StatusOK || m.Role != RoleMonitor {
		t.Fatalf("monitor query: %+v", m)
	}
	m, err = Unmarshal(s.handleDatagram(ctx, requestTo(t, CmdStop, &monitorKey, RoleMonitor, vip, 0, now, 6), vip, src, now), &monitorKey)
	if err != nil || m.Status != StatusForbidden {
		t.Fatalf("monitor stop: %v %+v", err, m)
	}
	// Malformed: silence.
	if out := s.handleDatagram(ctx, []byte("NLBR garbage"), vip, src, now); out != nil {
		t.Fatal("answered garbage")
	}
	if diff := cmp.Diff([]Command{CmdQuery, CmdDisable, CmdQuery}, h.got); diff != "" {
		t.Fatalf("executed (-want +got):\n%s", diff)
	}
	// Answered requests are counted per command and outcome; refusals
	// only by the guard.
	if s.Replies(CmdQuery, StatusOK) != 2 || s.Replies(CmdDisable, StatusFailed) != 1 ||
		s.Replies(CmdStop, StatusOK)+s.Replies(CmdStop, StatusFailed) != 0 || s.Replies(CmdStop, StatusRefused) != 0 {
		t.Fatalf("replies: query ok %d, disable failed %d, stop %d/%d", s.Replies(CmdQuery, StatusOK),
			s.Replies(CmdDisable, StatusFailed), s.Replies(CmdStop, StatusOK), s.Replies(CmdStop, StatusFailed))
	}
}

// TestNoAmplification: whatever arrives without a valid tag, or replayed,
// the bytes a server sends back are never more than the bytes it got, and
// replayed requests get answers only within the refusal budget.
func TestNoAmplification(t *testing.T) {
	s := NewServer(testKeys, local2, start, &fakeHandler{}, hclog.NewNullLogger())
	now := start.Add(time.Minute)
	ctx := context.Background()
	var in, out int
	r := rand.New(rand.NewPCG(1, 2))
	good := request(t, CmdQuery, &testKey, now, 1)
	s.handleDatagram(ctx, good, vip, operatorSrc, now) // the original runs
	for i := 0; i < 5000; i++ {
		var b []byte
		switch i % 4 {
		case 0: // random junk
			b = make([]byte, r.IntN(200))
			for j := range b {
				b[j] = byte(r.IntN(256))
			}
		case 1: // a valid header with a bad tag
			b = request(t, CmdStop, &Key{byte(i)}, now, byte(i))
		case 2: // a flipped byte of a good request
			b = append([]byte(nil), good...)
			b[r.IntN(len(b))] ^= 0x40
		case 3: // the captured request, replayed
			b = good
		}
		in += len(b)
		reply := s.handleDatagram(ctx, b, vip, netip.AddrFrom4([4]byte{198, 19, 0, byte(i)}), now)
		if len(reply) > len(b) {
			t.Fatalf("datagram %d: %d bytes in, %d out", i, len(b), len(reply))
		}
		out += len(reply)
	}
	if out > in/50 {
		t.Fatalf("%d bytes out for %d in: the refusal budget does not hold", out, in)
	}
	t.Logf("%d bytes in, %d out", in, out)
}

// TestReplayElsewhere: a captured request runs only where it was sent:
// not on another host (by VIP or by its own address), and not again on
// the same host after its agent restarted.
func TestReplayElsewhere(t *testing.T) {
	now := start.Add(time.Minute)
	ctx := context.Background()
	h2, h3 := &fakeHandler{}, &fakeHandler{}
	s2 := NewServer(testKeys, local2, start, h2, hclog.NewNullLogger())
	s3 := NewServer(testKeys, local3, start, h3, hclog.NewNullLogger())
	captured := requestTo(t, CmdStop, &testKey, RoleAdmin, host2, 0, now, 1) // nlbctl --host 198.18.1.2 stop
	if out := s2.handleDatagram(ctx, captured, host2, operatorSrc, now); out == nil || len(h2.got) != 1 {
		t.Fatal("the original did not run")
	}
	for _, dst := range []netip.Addr{host3, vip} {
		if out := s3.handleDatagram(ctx, captured, dst, operatorSrc, now.Add(time.Second)); out != nil || len(h3.got) != 0 {
			t.Fatalf("replayed to host 3 at %v: ran or answered", dst)
		}
	}
	// Host 2's agent restarts (fresh replay cache) and the capture comes
	// again, within MaxSkew of its timestamp.
	restarted := NewServer(testKeys, local2, now.Add(2*time.Second), h2, hclog.NewNullLogger())
	out := restarted.handleDatagram(ctx, captured, host2, operatorSrc, now.Add(5*time.Second))
	if len(h2.got) != 1 {
		t.Fatal("the capture ran again after a restart")
	}
	if m, err := Unmarshal(out, &testKey); err != nil || m.Status != StatusStale {
		t.Fatalf("after a restart: %v %+v", err, m)
	}
}

func TestGatherExpectsPeers(t *testing.T) {
	req, _ := newRequest(0, CmdQuery, Args{}, RoleAdmin, vip)
	g := newGather(req, 0)
	add := func(host uint8, st Status, peers []uint8) {
		body, _ := json.Marshal(Reply{Host: host, State: "converged", Peers: peers})
		b, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: st, RequestID: req.RequestID, Host: host, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce, Body: body}, &testKey)
		g.add(b, &testKey)
	}
	add(1, StatusOK, []uint8{1, 2, 3})
	if g.complete() {
		t.Fatal("complete with one of three replies")
	}
	add(3, StatusOK, []uint8{1, 2, 3})
	// A forged reply (wrong key) does not count, nor does a forged
	// refusal (protocol 1's untagged kind, or a tagged one with another key).
	body, _ := json.Marshal(Reply{Host: 2})
	forged, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: StatusOK, RequestID: req.RequestID, Host: 2, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce, Body: body}, &Key{})
	g.add(forged, &testKey)
	for _, k := range []*Key{nil, {7}} {
		refusal, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: StatusRefused, RequestID: req.RequestID, Host: 2, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce}, k)
		g.add(refusal, &testKey)
		stale, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: StatusStale, RequestID: req.RequestID, Host: 2, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce}, k)
		g.add(stale, &testKey)
	}
	// A genuine answer to another destination does not count either.
	body, _ = json.Marshal(Reply{Host: 2, Peers: []uint8{1, 2, 3}})
	elsewhere, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: StatusOK, RequestID: req.RequestID, Host: 2, Role: RoleAdmin, Dest: host3, Nonce: req.Nonce, Body: body}, &testKey)
	g.add(elsewhere, &testKey)
	res := g.result()
	if len(res.Replies) != 2 || !cmp.Equal(res.Missing, []uint8{2}) || len(res.Refused) != 0 {
		t.Fatalf("result: %+v", res)
	}
	// A tagged refusal counts, with its reason.
	stale, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: StatusStale, RequestID: req.RequestID, Host: 2, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce}, &testKey)
	g.add(stale, &testKey)
	if res := g.result(); !g.complete() || !cmp.Equal(res.Refused, []uint8{2}) || res.RefusedWhy[2] != StatusStale {
		t.Fatalf("tagged refusal: %+v", res)
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
	s := NewServer(testKeys, local2, start, h, hclog.NewNullLogger())
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

// FuzzSignedRequest reaches past authentication: requests with any
// command, target, role, destination, timestamp, nonce and body, signed
// with a key of their role, go through the whole server path (guard:
// stale, nonce and rate paths; argument decoding; dispatch) without a
// panic, and every answer is tagged and names the request.
func FuzzSignedRequest(f *testing.F) {
	f.Add(uint8(CmdQuery), uint8(0), uint8(RoleAdmin), []byte{198, 18, 0, 100}, int64(0), []byte{1}, []byte(`{"rule":"80"}`))
	f.Add(uint8(CmdStop), uint8(2), uint8(RoleMonitor), []byte{198, 18, 1, 2}, int64(-31e9), []byte{2}, []byte(`{`))
	f.Add(uint8(CmdFilter), uint8(3), uint8(RoleAdmin), []byte{198, 18, 1, 3}, int64(29e9), []byte{3}, []byte(`{"client":"x"}`))
	h := &fakeHandler{}
	s := NewServer(testKeys, local2, start, h, hclog.NewNullLogger())
	now := start.Add(time.Minute)
	f.Fuzz(func(t *testing.T, cmd, target, role uint8, dest []byte, skew int64, nonce, body []byte) {
		if len(body) > MaxRequestBody || len(dest) != 4 {
			return
		}
		m := &Message{Kind: KindRequest, Command: Command(cmd), Host: target, Role: Role(role),
			Dest: netip.AddrFrom4([4]byte(dest)), Timestamp: now.Add(time.Duration(skew)).UnixNano(), Body: body}
		copy(m.Nonce[:], nonce)
		key := testKey
		if Role(role) == RoleMonitor {
			key = monitorKey
		}
		b, err := Marshal(m, &key)
		if err != nil {
			return
		}
		src := netip.AddrFrom4([4]byte{198, 19, m.Nonce[0], m.Nonce[1]})
		out := s.handleDatagram(context.Background(), b, m.Dest, src, now)
		h.got = h.got[:0]
		if out == nil {
			return
		}
		r, err := Unmarshal(out, &key)
		if err != nil || r.Kind != KindReply || r.Nonce != m.Nonce || r.Dest != m.Dest || r.Role != m.Role {
			t.Fatalf("answer %v %+v to %+v", err, r, m)
		}
	})
}

// TestGuardIPv6: a request to an IPv6 VIP carries its destination's key
// (DestKey): accepted where it was sent, refused as misdirected at
// another IPv6 VIP of the host or at its IPv4 VIP.
func TestGuardIPv6(t *testing.T) {
	now := start.Add(time.Minute)
	vip6, other6 := netip.MustParseAddr("2001:2::100"), netip.MustParseAddr("2001:2::101")
	g := NewGuard(testKeys, Local{Addrs: []netip.Addr{vip, vip6, other6, host2}, HostID: 2}, start)
	for _, s := range []struct {
		name string
		b    []byte
		dst  netip.Addr
		want Refusal
	}{
		{"to the IPv6 VIP", requestTo(t, CmdQuery, &testKey, RoleAdmin, vip6, 0, now, 1), vip6, RefusedNone},
		{"sent to the IPv6 VIP, arrived at another", requestTo(t, CmdQuery, &testKey, RoleAdmin, vip6, 0, now, 2), other6, RefusedMisdirected},
		{"sent to the IPv6 VIP, arrived at the IPv4 VIP", requestTo(t, CmdQuery, &testKey, RoleAdmin, vip6, 0, now, 3), vip, RefusedMisdirected},
		{"sent to the IPv4 VIP, arrived at the IPv6 VIP", requestTo(t, CmdQuery, &testKey, RoleAdmin, vip, 0, now, 4), vip6, RefusedMisdirected},
	} {
		if _, _, got := g.Check(s.b, s.dst, operatorSrc, now); got != s.want {
			t.Errorf("%s: got %v, want %v", s.name, got, s.want)
		}
	}
	m, err := Unmarshal(requestTo(t, CmdQuery, &testKey, RoleAdmin, vip6, 0, now, 5), &testKey)
	if err != nil || !SameDest(m.Dest, vip6) || SameDest(m.Dest, other6) {
		t.Errorf("decoded destination %v (%v): same as %v: %v", m.Dest, err, vip6, SameDest(m.Dest, vip6))
	}
}
