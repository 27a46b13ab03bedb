package remote

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestClientServerUDP: nlbctl's client against a real server on loopback:
// every host's answer gathered, the destination checked, a monitor's
// query answered and its stop refused (forbidden), a wrong key unanswered.
func TestClientServerUDP(t *testing.T) {
	h := &soloHandler{}
	addr := serveLoopback(t, "127.0.0.1", h)
	do := func(key *Key, role Role, cmd Command) *Result {
		t.Helper()
		c := &Client{Key: key, Role: role, Timeout: 500 * time.Millisecond, Settle: 20 * time.Millisecond}
		res, err := c.Do(context.Background(), addr, 0, cmd, Args{Rule: "80"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if res := do(&testKey, 0, CmdQuery); len(res.Replies) != 1 || res.Replies[0].Status != StatusOK || res.Replies[0].Host != 1 || len(res.Missing) != 0 {
		t.Fatalf("admin query: %+v", res)
	}
	if res := do(&monitorKey, RoleMonitor, CmdQuery); len(res.Replies) != 1 || res.Replies[0].Status != StatusOK {
		t.Fatalf("monitor query: %+v", res)
	}
	if res := do(&monitorKey, RoleMonitor, CmdStop); len(res.Replies) != 0 || res.RefusedWhy[1] != StatusForbidden {
		t.Fatalf("monitor stop: %+v", res)
	}
	if res := do(&Key{9}, RoleAdmin, CmdQuery); len(res.Replies)+len(res.Refused) != 0 {
		t.Fatalf("wrong key: %+v", res)
	}
	if _, err := (&Client{}).Do(context.Background(), addr, 0, CmdQuery, Args{}); err == nil {
		t.Fatal("a client without a key sent a request")
	}
	if got := h.commands(); len(got) != 2 || got[0] != CmdQuery || got[1] != CmdQuery {
		t.Fatalf("executed %v", got)
	}
}

// soloHandler is one host that hears only itself.
type soloHandler struct {
	mu  sync.Mutex
	got []Command
}

func (h *soloHandler) Identity() (uint8, string, []uint8) { return 1, "converged", []uint8{1} }

func (h *soloHandler) Handle(_ context.Context, c Command, _ Args) (any, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, c)
	return map[string]int{"ok": 1}, nil
}

func (h *soloHandler) commands() []Command {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Command(nil), h.got...)
}

// TestGuardLimits: each limit of the guard at its edge.
func TestGuardLimits(t *testing.T) {
	now := start.Add(time.Hour)
	nonce := uint32(0)
	req := func(ts time.Time) []byte {
		nonce++
		m := &Message{Kind: KindRequest, Command: CmdQuery, Role: RoleAdmin, Dest: vip, Timestamp: ts.UnixNano()}
		binary.BigEndian.PutUint32(m.Nonce[:], nonce)
		b, _ := Marshal(m, &testKey)
		return b
	}
	src := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}) }
	g := NewGuard(testKeys, local2, start)
	for i, tc := range []struct {
		ts   time.Time
		want Refusal
	}{
		{now.Add(-MaxSkew), RefusedNone},
		{now.Add(MaxSkew), RefusedNone},
		{now.Add(-MaxSkew - 1), RefusedStale},
		{now.Add(-31 * time.Second), RefusedStale}, // the documented window is 30 s
		{now.Add(29 * time.Second), RefusedNone},
		{now.Add(MaxSkew + 1), RefusedStale},
		{start, RefusedStale}, // more than MaxSkew old anyway
	} {
		if _, _, r := g.Check(req(tc.ts), vip, src(i), now); r != tc.want {
			t.Errorf("timestamp %v from now: %v, want %v", tc.ts.Sub(now), r, tc.want)
		}
	}
	// Right after the start: stamped at the start is fresh, a nanosecond
	// before is not.
	g = NewGuard(testKeys, local2, start)
	if _, _, r := g.Check(req(start), vip, src(0), start); r != RefusedNone {
		t.Errorf("stamped at the agent's start: %v", r)
	}
	if _, _, r := g.Check(req(start.Add(-1)), vip, src(1), start); r != RefusedStale {
		t.Errorf("stamped before the agent's start: %v", r)
	}
	// The rate limiter's table holds maxSources sources; a new one past
	// that is limited, a known one is not.
	g = NewGuard(testKeys, local2, start)
	for i := 0; i < maxSources; i++ {
		if _, _, r := g.Check(req(now), vip, src(i), now); r != RefusedNone {
			t.Fatalf("source %d: %v", i, r)
		}
	}
	if _, _, r := g.Check(req(now), vip, src(maxSources), now); r != RefusedRateLimit {
		t.Errorf("source %d past the table: %v", maxSources+1, r)
	}
	if _, _, r := g.Check(req(now), vip, src(0), now); r != RefusedNone {
		t.Errorf("a known source: %v", r)
	}
	// Sources whose bucket is full again are forgotten (after a second).
	later := now.Add(time.Duration(float64(RateBurst)/RatePerSecond*float64(time.Second)) + 2*time.Second)
	if _, _, r := g.Check(req(later), vip, src(maxSources+1), later); r != RefusedNone || len(g.sources) != 1 {
		t.Errorf("after the buckets refilled: %v, %d sources kept", r, len(g.sources))
	}
	// Nonces: the cache holds MaxNonces; then fresh requests are refused
	// until old nonces expire.
	g = NewGuard(testKeys, local2, start)
	for i := 0; len(g.nonces) < MaxNonces; i++ {
		g.nonces[[16]byte{byte(i), byte(i >> 8), byte(i >> 16), 0xee}] = now.Add(2 * MaxSkew)
	}
	if _, _, r := g.Check(req(now), vip, src(1), now); r != RefusedCacheFull {
		t.Errorf("full nonce cache: %v", r)
	}
	end := now.Add(2*MaxSkew + 2*time.Second)
	if _, _, r := g.Check(req(end), vip, src(2), end); r != RefusedNone {
		t.Errorf("after the nonces expired: %v", r)
	}
}

// TestRefusalBudget: at most the burst of refusal answers at once, then
// the rate per second.
func TestRefusalBudget(t *testing.T) {
	g := NewGuard(testKeys, local2, start)
	now := start.Add(time.Minute)
	n := 0
	for i := 0; i < 100; i++ {
		if g.AnswerRefusal(now) {
			n++
		}
	}
	if n != refusalReplyBurst {
		t.Fatalf("%d answers at once, want %d", n, refusalReplyBurst)
	}
	n = 0
	for i := 0; i < 100; i++ {
		if g.AnswerRefusal(now.Add(time.Second)) {
			n++
		}
	}
	if n != refusalRepliesPerSecond {
		t.Fatalf("%d answers a second later, want %d", n, refusalRepliesPerSecond)
	}
}

// TestRefusalLogLimited: a flood of refusals writes one line per reason
// per refusalLogEvery, with the count of those not written.
func TestRefusalLogLimited(t *testing.T) {
	var buf bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Warn})
	s := NewServer(testKeys, local2, start, &fakeHandler{}, log)
	now := start.Add(time.Minute)
	for i := 0; i < 1000; i++ {
		s.handleDatagram(context.Background(), []byte("junk"), vip, operatorSrc, now.Add(time.Duration(i)*time.Millisecond))
	}
	if n := strings.Count(buf.String(), "remote request refused"); n != 1 {
		t.Fatalf("%d log lines for 1000 refusals in 1 s", n)
	}
	s.handleDatagram(context.Background(), []byte("junk"), vip, operatorSrc, now.Add(refusalLogEvery))
	if n := strings.Count(buf.String(), "remote request refused"); n != 2 || !strings.Contains(buf.String(), "more_since_last_line=999") {
		t.Fatalf("after %v: %d lines:\n%s", refusalLogEvery, n, buf.String())
	}
}

// TestNamesAndLimits: enum names, command parsing, roles, the stream
// reader's limit, an oversized reply.
func TestNamesAndLimits(t *testing.T) {
	for c := CmdQuery; c < numCommands; c++ {
		if p, err := ParseCommand(c.String()); err != nil || p != c || !c.Valid() {
			t.Errorf("command %d: %q %v", c, c.String(), err)
		}
	}
	for _, c := range []Command{0, numCommands} {
		if c.Valid() || !strings.HasPrefix(c.String(), "command(") {
			t.Errorf("command %d valid or named %q", c, c.String())
		}
	}
	if _, err := ParseCommand(""); err == nil {
		t.Error("empty command parsed")
	}
	for s := StatusOK; s < numStatuses; s++ {
		if strings.HasPrefix(s.String(), "status(") || s.Refusal() != (s >= StatusRefused) {
			t.Errorf("status %d: %q refusal %v", s, s.String(), s.Refusal())
		}
	}
	if numStatuses.Refusal() || !strings.HasPrefix(numStatuses.String(), "status(") {
		t.Error("out-of-range status")
	}
	for _, r := range []Role{RoleAdmin, RoleMonitor} {
		if p, err := ParseRole(r.String()); err != nil || p != r || !r.Valid() {
			t.Errorf("role %d", r)
		}
	}
	if Role(0).Valid() || numRoles.Valid() || !strings.HasPrefix(numRoles.String(), "role(") {
		t.Error("out-of-range roles")
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("role root parsed")
	}
	if RoleMonitor.Allows(CmdStop) || !RoleMonitor.Allows(CmdFilter) || !RoleAdmin.Allows(CmdStop) {
		t.Error("role permissions")
	}
	if s := Refusal(NumRefusals).String(); s != "refusal(?)" {
		t.Errorf("out-of-range refusal: %q", s)
	}
	if s := RefusedForbidden.String(); s != "forbidden" {
		t.Errorf("last refusal: %q", s)
	}
	if b, err := readAll(strings.NewReader("abcd"), 4); err != nil || string(b) != "abcd" {
		t.Errorf("readAll at its limit: %q %v", b, err)
	}
	if _, err := readAll(strings.NewReader("abcde"), 4); err != ErrOversized {
		t.Errorf("readAll past its limit: %v", err)
	}
	// A reply larger than MaxReplyBody is replaced by a failure.
	s := NewServer(testKeys, local2, start, bigHandler{}, hclog.NewNullLogger())
	now := start.Add(time.Minute)
	m, r := decodeReply(t, s.handleDatagram(context.Background(), request(t, CmdQuery, &testKey, now, 1), vip, operatorSrc, now), &testKey)
	if m.Status != StatusFailed || !strings.Contains(r.Error, "at most") {
		t.Errorf("oversized reply: %v %+v", m.Status, r)
	}
	if s.Replies(CmdQuery, StatusFailed) != 1 || s.Replies(Command(0), StatusOK) != 0 || s.Replies(CmdQuery, StatusRefused) != 0 {
		t.Error("reply counts")
	}
}

type bigHandler struct{}

func (bigHandler) Identity() (uint8, string, []uint8) { return 2, "converged", []uint8{2} }
func (bigHandler) Handle(context.Context, Command, Args) (any, error) {
	return strings.Repeat("x", MaxReplyBody), nil
}

// TestLargestReply: a reply of exactly MaxReplyBody bytes of body (the
// largest datagram) is sent whole and read whole.
func TestLargestReply(t *testing.T) {
	base, _ := json.Marshal(Reply{Host: 1, State: "converged", Peers: []uint8{1}, Result: json.RawMessage(`""`)})
	n := MaxReplyBody - len(base)
	addr := serveLoopback(t, "127.0.0.1", sizedHandler(strings.Repeat("x", n)))
	c := &Client{Key: &testKey, Timeout: time.Second, Settle: 10 * time.Millisecond}
	res, err := c.Do(context.Background(), addr, 0, CmdQuery, Args{})
	if err != nil || len(res.Replies) != 1 || res.Replies[0].Status != StatusOK || len(res.Replies[0].Result) != n+2 {
		t.Fatalf("largest reply: %v %+v", err, res)
	}
}

type sizedHandler string

func (sizedHandler) Identity() (uint8, string, []uint8) { return 1, "converged", []uint8{1} }
func (h sizedHandler) Handle(context.Context, Command, Args) (any, error) {
	return string(h), nil
}

// TestWildcardSocket: a server on a wildcard socket takes the destination
// from each datagram's packet info, not from the socket's address.
func TestWildcardSocket(t *testing.T) {
	wild := serveLoopback(t, "0.0.0.0", &soloHandler{})
	c := &Client{Key: &testKey, Timeout: time.Second, Settle: 10 * time.Millisecond}
	res, err := c.Do(context.Background(), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), wild.Port()), 0, CmdQuery, Args{})
	if err != nil || len(res.Replies) != 1 {
		t.Fatalf("via a wildcard socket: %v %+v", err, res)
	}
}

// TestGatherOrderAndCompletion: results list hosts in order; one reply
// and one refusal complete a request to two hosts.
func TestGatherOrderAndCompletion(t *testing.T) {
	req, _ := newRequest(0, CmdQuery, Args{}, RoleAdmin, vip)
	g := newGather(req, 0)
	for _, host := range []uint8{3, 1} {
		body, _ := json.Marshal(Reply{Host: host, Peers: []uint8{1, 2, 3, 4, 5, 6}})
		b, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, RequestID: req.RequestID, Host: host, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce, Body: body}, &testKey)
		g.add(b, &testKey)
	}
	for _, host := range []uint8{5, 4} {
		b, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: StatusStale, RequestID: req.RequestID, Host: host, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce}, &testKey)
		g.add(b, &testKey)
	}
	res := g.result()
	if len(res.Replies) != 2 || res.Replies[0].Host != 1 || res.Replies[1].Host != 3 ||
		!slices.Equal(res.Refused, []uint8{4, 5}) || !slices.Equal(res.Missing, []uint8{2, 6}) {
		t.Fatalf("result: %+v", res)
	}
	g = newGather(req, 0)
	body, _ := json.Marshal(Reply{Host: 1, Peers: []uint8{1, 2}})
	b, _ := Marshal(&Message{Kind: KindReply, Command: CmdQuery, RequestID: req.RequestID, Host: 1, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce, Body: body}, &testKey)
	g.add(b, &testKey)
	b, _ = Marshal(&Message{Kind: KindReply, Command: CmdQuery, Status: StatusReplay, RequestID: req.RequestID, Host: 2, Role: RoleAdmin, Dest: vip, Nonce: req.Nonce}, &testKey)
	g.add(b, &testKey)
	if !g.complete() {
		t.Fatal("a reply and a refusal from the two hosts do not complete the request")
	}
}

// TestLocalLargestRequest: the local socket takes a request with the
// largest body.
func TestLocalLargestRequest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nlbd.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(testKeys, local2, start, &fakeHandler{}, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.ServeLocal(ctx, l)
	rule := strings.Repeat("r", MaxRequestBody-len(`{"rule":""}`))
	rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
	defer rcancel()
	res, err := DoLocal(rctx, path, CmdDisable, Args{Rule: rule})
	if err != nil || len(res.Replies) != 1 || res.Replies[0].Status != StatusOK {
		t.Fatalf("largest local request: %v %+v", err, res)
	}
}

// serveLoopback serves remote control for host 1 at 127.0.0.1 on a socket
// bound to bind (127.0.0.1, or 0.0.0.0 for the wildcard) until the test
// ends, and returns the socket's address.
func serveLoopback(t *testing.T, bind string, h Handler) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(bind), 0)))
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(testKeys, Local{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, HostID: 1}, time.Now().Add(-time.Second), h, hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeUDP(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// TestHostIDsJSON: host lists are JSON arrays of numbers, never base64
// strings or null.
func TestHostIDsJSON(t *testing.T) {
	for _, tc := range []struct {
		in   HostIDs
		want string
	}{{HostIDs{1, 2, 3}, `[1,2,3]`}, {HostIDs{}, `[]`}, {nil, `[]`}, {HostIDs{64}, `[64]`}} {
		b, err := json.Marshal(tc.in)
		if err != nil || string(b) != tc.want {
			t.Errorf("%v: %s %v, want %s", tc.in, b, err, tc.want)
		}
	}
	q := QueryResult{Members: HostIDs{1, 2, 3}, Heard: HostIDs{1}}
	b, _ := json.Marshal(q)
	if !strings.Contains(string(b), `"members":[1,2,3]`) || !strings.Contains(string(b), `"heard":[1]`) {
		t.Errorf("query result: %s", b)
	}
	var back QueryResult
	if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back.Members, q.Members) {
		t.Errorf("round trip: %v %v", err, back.Members)
	}
	var bad HostIDs
	if err := json.Unmarshal([]byte(`[256]`), &bad); err == nil {
		t.Error("host ID 256 accepted")
	}
}

// TestResendAfterLoss: the first copy of a request is lost; the client
// sends it again and the host answers (twice: a duplicated answer counts
// once). The command runs once.
func TestResendAfterLoss(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lo := netip.MustParseAddr("127.0.0.1")
	h := &soloHandler{}
	s := NewServer(testKeys, Local{Addrs: []netip.Addr{lo}, HostID: 1}, time.Now().Add(-time.Second), h, hclog.NewNullLogger())
	go func() {
		buf := make([]byte, MaxDatagram)
		for i := 0; ; i++ {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if i == 0 {
				continue // lost on the way
			}
			if out := s.handleDatagram(context.Background(), buf[:n], lo, from.Addr(), time.Now()); out != nil {
				conn.WriteToUDPAddrPort(out, from)
				conn.WriteToUDPAddrPort(out, from) // and a duplicate of the answer
			}
		}
	}()
	c := &Client{Key: &testKey, Timeout: 800 * time.Millisecond, Settle: 300 * time.Millisecond}
	res, err := c.Do(context.Background(), conn.LocalAddr().(*net.UDPAddr).AddrPort(), 0, CmdStop, Args{})
	if err != nil || len(res.Replies) != 1 || res.Replies[0].Status != StatusOK || len(res.Refused) != 0 {
		t.Fatalf("after a lost request: %v %+v", err, res)
	}
	if got := h.commands(); len(got) != 1 {
		t.Fatalf("the command ran %d times", len(got))
	}
}

// TestResendAfterLostReply: the host ran the request but its answer was
// lost; the copy the client sends again is refused as a replay, which the
// client ignores (the command is not reported refused, and ran once).
func TestResendAfterLostReply(t *testing.T) {
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	lo := netip.MustParseAddr("127.0.0.1")
	h := &soloHandler{}
	s := NewServer(testKeys, Local{Addrs: []netip.Addr{lo}, HostID: 1}, time.Now().Add(-time.Second), h, hclog.NewNullLogger())
	go func() {
		buf := make([]byte, MaxDatagram)
		for i := 0; ; i++ {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			out := s.handleDatagram(context.Background(), buf[:n], lo, from.Addr(), time.Now())
			if i > 0 && out != nil {
				conn.WriteToUDPAddrPort(out, from) // the first answer is lost
			}
		}
	}()
	c := &Client{Key: &testKey, Timeout: 800 * time.Millisecond}
	res, err := c.Do(context.Background(), conn.LocalAddr().(*net.UDPAddr).AddrPort(), 1, CmdStop, Args{})
	if err != nil || len(res.Replies) != 0 || len(res.Refused) != 0 || !slices.Equal(res.Missing, []uint8{1}) {
		t.Fatalf("after a lost answer: %v %+v", err, res)
	}
	if got := h.commands(); len(got) != 1 {
		t.Fatalf("the command ran %d times", len(got))
	}
}
