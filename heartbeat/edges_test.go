package heartbeat

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nlbproject/nlb/filter"
)

// TestReplayWindowShift: a jump forward keeps the numbers still inside the
// window (a jump of 63 keeps top's bit), and a jump of a whole window or
// more forgets them all.
func TestReplayWindowShift(t *testing.T) {
	for _, tc := range []struct {
		jump uint64
		old  bool // is the old top still refused as a replay?
	}{
		{1, true}, {ReplayWindow - 1, true}, {ReplayWindow, false}, {ReplayWindow + 1, false},
	} {
		var r replayState
		r.accept(100)
		r.accept(99)
		if !r.accept(100 + tc.jump) {
			t.Fatalf("jump %d refused", tc.jump)
		}
		// The old top is either still remembered (refused), or below the
		// window (refused too): it is never accepted again.
		if r.accept(100) {
			t.Errorf("jump %d: old top accepted again", tc.jump)
		}
		// 101 is inside the window after any jump below the window size,
		// unseen, so accepted once; after a larger jump it is outside.
		if got, want := r.accept(101), tc.jump > 1 && tc.jump < ReplayWindow+1; got != want {
			t.Errorf("jump %d: accept(101) = %v, want %v", tc.jump, got, want)
		}
		if tc.jump == ReplayWindow-1 && r.accept(99) {
			t.Errorf("jump %d: 99 (bit 64 after the jump) accepted", tc.jump)
		}
	}
}

// TestMarshalLimits: host IDs and rule counts at and past their limits.
func TestMarshalLimits(t *testing.T) {
	h := sampleHeartbeat()
	h.HostID = filter.MaxHostID
	h.Rules = make([]RuleSetting, MaxRules)
	for i := range h.Echo {
		h.Echo[i] = uint64(i) + 1
	}
	b, err := h.Marshal(&testKey)
	if err != nil {
		t.Fatalf("host %d with %d rules: %v", filter.MaxHostID, MaxRules, err)
	}
	if len(b) != heartbeatFixLen+ruleSettingLen*MaxRules+echoLen*filter.MaxHostID+MACLen || len(b) > MaxMessageLen {
		t.Fatalf("heartbeat of %d bytes", len(b))
	}
	m, err := Unmarshal(b, &testKey)
	if err != nil || m.From() != filter.MaxHostID || len(m.(*Heartbeat).Rules) != MaxRules || m.(*Heartbeat).Echo != h.Echo {
		t.Fatalf("round trip at the limits: %v %+v", err, m)
	}
	h.Echo = [filter.MaxHostID]uint64{}
	h.HostID = filter.MaxHostID + 1
	if _, err := h.Marshal(&testKey); !errors.Is(err, ErrInvalid) {
		t.Errorf("host %d marshalled: %v", h.HostID, err)
	}
	h.HostID = 1
	h.Rules = make([]RuleSetting, MaxRules+1)
	if _, err := h.Marshal(&testKey); !errors.Is(err, ErrInvalid) {
		t.Errorf("%d rules marshalled: %v", MaxRules+1, err)
	}
	h.Rules = nil
	b, err = h.Marshal(&testKey)
	if err != nil || len(b) != heartbeatFixLen+MACLen {
		t.Fatalf("no rules: %d bytes, %v", len(b), err)
	}
	if m, err := Unmarshal(b, &testKey); err != nil || len(m.(*Heartbeat).Rules) != 0 {
		t.Fatalf("no rules round trip: %v", err)
	}
	c := &TableChunk{ClusterVIP: testVIP, HostID: filter.MaxHostID}
	if _, err := c.Marshal(&testKey); err != nil {
		t.Errorf("chunk from host %d: %v", filter.MaxHostID, err)
	}
	c.HostID = filter.MaxHostID + 1
	if _, err := c.Marshal(&testKey); !errors.Is(err, ErrInvalid) {
		t.Errorf("chunk from host %d marshalled: %v", c.HostID, err)
	}
}

// TestUnmarshalLimits: frames at each length boundary, and signed frames
// whose content is out of range.
func TestUnmarshalLimits(t *testing.T) {
	hb, _ := sampleHeartbeat().Marshal(&testKey)
	if _, err := Unmarshal(hb[:headerLen-1], &testKey); !errors.Is(err, ErrShort) {
		t.Errorf("7 bytes: %v", err)
	}
	if _, err := Unmarshal(hb[:headerLen], &testKey); !errors.Is(err, ErrShort) {
		t.Errorf("header only: %v, want short (the length says more)", err)
	}
	// A heartbeat whose length field is one short of the fixed part.
	short := append([]byte(nil), hb...)
	binary.BigEndian.PutUint16(short[6:8], heartbeatFixLen+MACLen-1)
	if _, err := Unmarshal(short, &testKey); !errors.Is(err, ErrLength) {
		t.Errorf("length one short of a heartbeat: %v", err)
	}
	// Signed frames (heartbeat, chunk) with an out-of-range host ID are
	// refused after the MAC verifies: a key holder cannot claim host 0 or
	// 65.
	tc, _ := (&TableChunk{ClusterVIP: testVIP, HostID: 2}).Marshal(&testKey)
	for _, frame := range [][]byte{hb, tc} {
		for _, id := range []uint8{0, filter.MaxHostID + 1} {
			b := append([]byte(nil), frame...)
			b[12] = id
			resign(b[:len(b)-MACLen], b[len(b)-MACLen:])
			if _, err := Unmarshal(b, &testKey); !errors.Is(err, ErrInvalid) {
				t.Errorf("signed frame of type %d from host %d: %v", b[5], id, err)
			}
		}
	}
	// The largest host ID is accepted.
	b := append([]byte(nil), hb...)
	b[12] = filter.MaxHostID
	resign(b[:len(b)-MACLen], b[len(b)-MACLen:])
	if m, err := Unmarshal(b, &testKey); err != nil || m.From() != filter.MaxHostID {
		t.Errorf("signed heartbeat from host %d: %v", filter.MaxHostID, err)
	}
}

// resign recomputes the tag of a frame edited in a test.
func resign(msg, tag []byte) { copy(tag, signed(msg)) }

func signed(msg []byte) []byte { return sign(append([]byte(nil), msg...), &testKey)[len(msg):] }

// TestClaimsOurVIPShort: the VIP field ends at byte 12.
func TestClaimsOurVIPShort(t *testing.T) {
	g := NewGuard(Keyring{testKey}, testVIP, 1)
	b := make([]byte, 12)
	copy(b[8:12], testVIP.AsSlice())
	if !g.ClaimsOurVIP(b) {
		t.Error("a 12-byte frame naming our VIP not recognised")
	}
	if g.ClaimsOurVIP(b[:11]) {
		t.Error("an 11-byte frame recognised")
	}
	if g.ClaimsOurVIP(append(b[:8:8], netip.MustParseAddr("198.18.0.7").AsSlice()...)) {
		t.Error("another VIP recognised")
	}
}

// TestGuardCounts: every outcome is counted once per frame.
func TestGuardCounts(t *testing.T) {
	g := NewGuard(Keyring{testKey}, testVIP, 1)
	h := sampleHeartbeat()
	h.HostID, h.Seq = 2, 1
	b, _ := h.Marshal(&testKey)
	for i := 0; i < 3; i++ {
		g.Check(b)
	}
	g.Check([]byte("junk junk junk"))
	c := g.Counts()
	if c[DropNone] != 1 || c[DropReplay] != 2 || c[DropMagic] != 1 {
		t.Errorf("counts %v", c)
	}
	if s := Drop(NumDrops).String(); s == "" || s == Drop(0).String() {
		t.Errorf("out-of-range drop prints %q", s)
	}
	if s := Drop(NumDrops - 1).String(); s == Drop(NumDrops).String() {
		t.Errorf("last drop prints %q like an out-of-range one", s)
	}
}

// TestTiming: dead-after is tolerance × period; the lease ends two
// periods earlier, and lasts at least one period.
func TestTiming(t *testing.T) {
	for _, tc := range []struct {
		tol             int
		dead, leaseWant time.Duration
	}{
		{10, time.Second, 800 * time.Millisecond},
		{3, 300 * time.Millisecond, 100 * time.Millisecond},
		{2, 200 * time.Millisecond, 100 * time.Millisecond},
	} {
		tm := Timing{Period: 100 * time.Millisecond, LossTolerance: tc.tol}
		if tm.DeadAfter() != tc.dead || tm.LeaseFor() != tc.leaseWant {
			t.Errorf("tolerance %d: dead after %v, lease %v; want %v, %v", tc.tol, tm.DeadAfter(), tm.LeaseFor(), tc.dead, tc.leaseWant)
		}
	}
}

// FuzzSigned reaches past authentication: any bytes, signed with the
// cluster key (as a key holder could), decode without a panic, and
// whatever decodes re-encodes to a frame that decodes to the same message
// (reserved bytes are not carried), and passes the guard without a panic.
func FuzzSigned(f *testing.F) {
	hb, _ := sampleHeartbeat().Marshal(&testKey)
	tc, _ := (&TableChunk{ClusterVIP: testVIP, HostID: 2}).Marshal(&testKey)
	f.Add(hb[:len(hb)-MACLen])
	f.Add(tc[:len(tc)-MACLen])
	f.Fuzz(func(t *testing.T, body []byte) {
		b := append(append([]byte(nil), body...), signed(body)...)
		m, err := Unmarshal(b, &testKey)
		if err != nil {
			return
		}
		out, err := Marshal(m, &testKey)
		if err != nil {
			t.Fatalf("a signed frame decoded but does not encode: %v", err)
		}
		again, err := Unmarshal(out, &testKey)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if diff := cmp.Diff(m, again, addrCmp()); diff != "" {
			t.Fatalf("round trip:\n%s", diff)
		}
		g := NewGuard(Keyring{testKey}, testVIP, 1)
		g.Check(b)
	})
}

// TestGuardOwnIDAndIncarnations: frames with our ID are checked like any
// other (an earlier incarnation's are stale, repeats are replays); an
// incarnation more than a day ahead is refused as implausible.
func TestGuardOwnIDAndIncarnations(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	g := NewGuard(Keyring{testKey}, testVIP, 1)
	g.Now = func() time.Time { return now }
	own := uint64(now.UnixNano())
	g.SetOwnIncarnation(own)
	frame := func(id uint8, inc, seq uint64) []byte {
		h := sampleHeartbeat()
		h.HostID, h.Incarnation, h.Seq = id, inc, seq
		b, err := h.Marshal(&testKey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for i, s := range []struct {
		b    []byte
		want Drop
	}{
		{frame(1, own-1, 9), DropStale},            // our earlier life, replayed
		{frame(1, own, 1), DropSelf},               // our own, looped back
		{frame(1, own+5, 1), DropSelf},             // another host 1, later
		{frame(1, own+5, 1), DropReplay},           // ... replayed
		{frame(2, ^uint64(0), 1), DropImplausible}, // 2^64-1
		{frame(2, uint64(now.Add(MaxIncarnationAhead+time.Second).UnixNano()), 1), DropImplausible},
		{frame(2, uint64(now.Add(23*time.Hour).UnixNano()), 1), DropNone}, // 23 h ahead: a clock off by most of a day
		{frame(3, uint64(now.Add(24*time.Hour).UnixNano()), 1), DropNone}, // exactly a day ahead: the limit
	} {
		if _, d := g.Check(s.b); d != s.want {
			t.Errorf("step %d: %v, want %v", i, d, s.want)
		}
	}
	if c := g.Counts(); c[DropSelf] != 2 || c[DropStale] != 1 || c[DropImplausible] != 2 || c[DropReplay] != 1 || c[DropNone] != 2 {
		t.Errorf("counts %v", c)
	}
}

// TestUnmarshalEdges: frames at the exact header size, and declared
// lengths too short to hold a heartbeat, decode to errors (never a
// panic); a chunk from the largest host ID decodes.
func TestUnmarshalEdges(t *testing.T) {
	hb, _ := sampleHeartbeat().Marshal(&testKey)
	head := append([]byte(nil), hb[:headerLen]...)
	binary.BigEndian.PutUint16(head[6:8], headerLen)
	if _, err := Unmarshal(head, &testKey); !errors.Is(err, ErrLength) {
		t.Errorf("a header that declares itself whole: %v, want %v", err, ErrLength)
	}
	for _, n := range []int{headerLen + 1, 90, 93, heartbeatFixLen} {
		b := append([]byte(nil), hb[:n]...)
		binary.BigEndian.PutUint16(b[6:8], uint16(n))
		if _, err := Unmarshal(b, &testKey); !errors.Is(err, ErrLength) {
			t.Errorf("a heartbeat declaring %d bytes: %v", n, err)
		}
	}
	tc, _ := (&TableChunk{ClusterVIP: testVIP, HostID: 2}).Marshal(&testKey)
	b := append([]byte(nil), tc...)
	b[12] = filter.MaxHostID
	resign(b[:len(b)-MACLen], b[len(b)-MACLen:])
	if m, err := Unmarshal(b, &testKey); err != nil || m.From() != filter.MaxHostID {
		t.Errorf("chunk from host %d: %v", filter.MaxHostID, err)
	}
}

// TestNetworkGroups: two named partition groups and the unnamed one are
// three islands.
func TestNetworkGroups(t *testing.T) {
	t0 := time.Unix(0, 0)
	n := NewNetwork(6, t0)
	a, b, c := n.Join("a"), n.Join("b"), n.Join("c")
	n.Partition([]string{"a"}, []string{"b"})
	a.Send([]byte("1"))
	b.Send([]byte("2"))
	c.Send([]byte("3"))
	n.Advance(t0)
	if len(drain(a))+len(drain(b))+len(drain(c)) != 0 {
		t.Fatal("islands {a}, {b}, {c} hear each other")
	}
}
