package heartbeat

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	testKey = DeriveKey([]byte("0123456789abcdef0123456789abcdef"))
	testVIP = netip.MustParseAddr("198.18.0.100")
)

func sampleHeartbeat() *Heartbeat {
	return &Heartbeat{
		ClusterVIP: testVIP, HostID: 3, State: 2, Flags: 0x8001,
		Incarnation: 1700000000123456789, Seq: 42,
		MAC:          [6]byte{0x02, 0x03, 198, 18, 0, 100},
		DedicatedIP:  netip.MustParseAddr("198.18.0.3"),
		ConfigDigest: [16]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		View:         0b1011, Epoch: 7, EpochDigest: [16]byte{0xee},
		Phase: 1, Retaining: 1 << 32, Members: 0b111,
		Rules:       []RuleSetting{{Weight: 50, Priority: 3}, {Weight: 0, Priority: 1, Flags: RuleDraining}},
		Echo:        [64]uint64{0: 1700000000000000001, 3: 7, 63: 1<<64 - 1},
		VotersEpoch: 12, Voters: 0b1011,
	}
}

func addrCmp() cmp.Option { return cmp.Comparer(func(a, b netip.Addr) bool { return a == b }) }

func TestHeartbeatRoundTrip(t *testing.T) {
	h := sampleHeartbeat()
	b, err := h.Marshal(&testKey)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != heartbeatFixLen+2*ruleSettingLen+3*echoLen+MACLen {
		t.Fatalf("length %d", len(b))
	}
	// Ethernet pads short frames: trailing bytes must be ignored.
	padded := append(append([]byte(nil), b...), make([]byte, 20)...)
	m, err := Unmarshal(padded, &testKey)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h, m, addrCmp()); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
	// Decoded values never alias the input.
	for i := range padded {
		padded[i] = 0
	}
	if diff := cmp.Diff(h, m, addrCmp()); diff != "" {
		t.Fatalf("decoded message aliases the buffer:\n%s", diff)
	}
}

func TestTableChunkRoundTrip(t *testing.T) {
	c := &TableChunk{ClusterVIP: testVIP, HostID: 1, Table: 4, Chunk: 3, Incarnation: 9, Seq: 10, Epoch: 11}
	for i := range c.Owners {
		c.Owners[i] = uint8(i % 64)
	}
	b, err := c.Marshal(&testKey)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Unmarshal(b, &testKey)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(c, m, addrCmp()); diff != "" {
		t.Fatalf("round trip (-want +got):\n%s", diff)
	}
}

func TestUnmarshalRefuses(t *testing.T) {
	good, _ := sampleHeartbeat().Marshal(&testKey)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	otherKey := DeriveKey([]byte("another key, also 32 bytes long!"))
	tests := []struct {
		name string
		b    []byte
		key  *Key
		want error
	}{
		{"empty", nil, &testKey, ErrShort},
		{"header only", good[:8], &testKey, ErrShort},
		{"truncated", good[:len(good)-1], &testKey, ErrShort},
		{"magic", mut(func(b []byte) []byte { b[0] ^= 1; return b }), &testKey, ErrMagic},
		{"version", mut(func(b []byte) []byte { b[4] = 9; return b }), &testKey, ErrVersion},
		{"type", mut(func(b []byte) []byte { b[5] = 77; return b }), &testKey, ErrType},
		{"oversized", mut(func(b []byte) []byte { b[6], b[7] = 0xff, 0xff; return b }), &testKey, ErrOversized},
		{"length vs rules", mut(func(b []byte) []byte { b[93] = 5; return b }), &testKey, ErrLength},
		{"flipped bit", mut(func(b []byte) []byte { b[50] ^= 0x10; return b }), &testKey, ErrAuth},
		{"wrong key", good, &otherKey, ErrAuth},
	}
	for _, tt := range tests {
		if _, err := Unmarshal(tt.b, tt.key); !errors.Is(err, tt.want) {
			t.Errorf("%s: error %v, want %v", tt.name, err, tt.want)
		}
	}
	// Invalid fields are refused even when correctly signed.
	h := sampleHeartbeat()
	h.HostID = 0
	if _, err := h.Marshal(&testKey); !errors.Is(err, ErrInvalid) {
		t.Errorf("host ID 0 marshalled: %v", err)
	}
}

func TestGuard(t *testing.T) {
	g := NewGuard(Keyring{testKey}, testVIP, 1)
	frame := func(id uint8, vip netip.Addr, inc, seq uint64) []byte {
		h := sampleHeartbeat()
		h.HostID, h.ClusterVIP, h.Incarnation, h.Seq = id, vip, inc, seq
		b, err := h.Marshal(&testKey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	steps := []struct {
		b    []byte
		want Drop
	}{
		{frame(2, testVIP, 100, 1), DropNone},
		{frame(2, testVIP, 100, 1), DropReplay}, // exact replay
		{frame(2, testVIP, 100, 5), DropNone},   // gaps are fine (loss)
		{frame(2, testVIP, 100, 3), DropNone},   // reordered: inside the window, new
		{frame(2, testVIP, 100, 3), DropReplay}, // ...but only once
		{frame(2, testVIP, 100, 200), DropNone},
		{frame(2, testVIP, 100, 100), DropReplay}, // below the window
		{frame(2, testVIP, 99, 50), DropStale},    // previous incarnation
		{frame(2, testVIP, 101, 1), DropNone},     // restart: new incarnation
		{frame(1, testVIP, 5, 5), DropSelf},
		{frame(3, netip.MustParseAddr("198.18.9.9"), 1, 1), DropForeign},
		{[]byte("garbage garbage garbage"), DropMagic},
	}
	for i, s := range steps {
		if _, d := g.Check(s.b); d != s.want {
			t.Errorf("step %d: %v, want %v", i, d, s.want)
		}
	}
	c := g.Counts()
	if c[DropNone] != 5 || c[DropReplay] != 3 || c[DropStale] != 1 {
		t.Fatalf("counts %v", c)
	}
}

// TestReplayWindowEdge: the window holds exactly ReplayWindow sequence
// numbers. The oldest still inside (top-63) is accepted once; the first
// outside it (top-64) is refused, never accepted unrecorded (a shift by
// 64 would give an empty bit and make it replayable forever).
func TestReplayWindowEdge(t *testing.T) {
	const top = 1000
	var r replayState
	if !r.accept(top) {
		t.Fatal("first sequence number refused")
	}
	for _, tc := range []struct {
		seq  uint64
		want bool
	}{
		{top - ReplayWindow, false},
		{top - ReplayWindow, false},
		{top - ReplayWindow + 1, true},
		{top - ReplayWindow + 1, false},
		{top - 1, true},
		{top - 1, false},
		{top, false},
		{top - ReplayWindow - 1, false},
	} {
		if got := r.accept(tc.seq); got != tc.want {
			t.Errorf("accept(top-%d) = %v, want %v", top-tc.seq, got, tc.want)
		}
	}
	// Through the Guard, as a replayed frame arrives.
	g := NewGuard(Keyring{testKey}, testVIP, 1)
	frame := func(seq uint64) []byte {
		h := sampleHeartbeat()
		h.HostID, h.Incarnation, h.Seq = 2, 7, seq
		b, err := h.Marshal(&testKey)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, d := g.Check(frame(top)); d != DropNone {
		t.Fatalf("first frame: %v", d)
	}
	for i := 0; i < 3; i++ {
		if _, d := g.Check(frame(top - ReplayWindow)); d != DropReplay {
			t.Fatalf("frame top-%d, attempt %d: %v, want %v", ReplayWindow, i, d, DropReplay)
		}
	}
}

// FuzzUnmarshal: arbitrary input never panics, and whatever decodes
// re-encodes to the same bytes.
func FuzzUnmarshal(f *testing.F) {
	hb, _ := sampleHeartbeat().Marshal(&testKey)
	tc, _ := (&TableChunk{ClusterVIP: testVIP, HostID: 2}).Marshal(&testKey)
	f.Add(hb)
	f.Add(tc)
	f.Add([]byte{0x4e, 0x4c, 0x42, 0x48, 1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b, &testKey)
		if err != nil {
			return
		}
		var out []byte
		switch m := m.(type) {
		case *Heartbeat:
			out, err = m.Marshal(&testKey)
		case *TableChunk:
			out, err = m.Marshal(&testKey)
		}
		if err != nil {
			t.Fatalf("decoded message does not re-encode: %v", err)
		}
		n := len(out)
		if !bytes.Equal(out, b[:n]) {
			// Reserved bytes are not carried; only they may differ, and
			// then the MAC cannot match, so a valid message has none set.
			t.Fatalf("re-encoding differs")
		}
	})
}

// FuzzRoundTrip: any heartbeat the fuzzer builds survives encoding.
func FuzzRoundTrip(f *testing.F) {
	f.Add(uint8(1), uint8(2), uint16(3), uint64(4), uint64(5), uint64(6), uint64(7), uint8(8), []byte{50, 1, 0})
	f.Fuzz(func(t *testing.T, id, state uint8, flags uint16, inc, seq, view, epoch uint64, phase uint8, rules []byte) {
		h := &Heartbeat{ClusterVIP: testVIP, HostID: id%64 + 1, State: state, Flags: flags,
			Incarnation: inc, Seq: seq, View: view, Epoch: epoch, Phase: phase, Members: view >> 1,
			DedicatedIP: netip.MustParseAddr("198.18.0.1")}
		for i := 0; i+2 < len(rules) && len(h.Rules) < MaxRules; i += 3 {
			h.Rules = append(h.Rules, RuleSetting{rules[i], rules[i+1], rules[i+2]})
		}
		b, err := h.Marshal(&testKey)
		if err != nil {
			t.Fatal(err)
		}
		m, err := Unmarshal(b, &testKey)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(h, m, addrCmp()); diff != "" {
			t.Fatalf("round trip:\n%s", diff)
		}
	})
}

// TestClaimsOurVIP: a frame signed with another key is refused as
// bad-auth, and its VIP field still tells whether it claims our cluster.
func TestClaimsOurVIP(t *testing.T) {
	g := NewGuard(Keyring{testKey}, testVIP, 1)
	other := DeriveKey([]byte("another cluster's key, 32+ bytes long"))
	for _, tc := range []struct {
		vip  netip.Addr
		want bool
	}{{testVIP, true}, {netip.MustParseAddr("198.18.5.5"), false}} {
		h := sampleHeartbeat()
		h.HostID, h.ClusterVIP = 2, tc.vip
		b, err := h.Marshal(&other)
		if err != nil {
			t.Fatal(err)
		}
		if _, d := g.Check(b); d != DropAuth {
			t.Fatalf("another key: %v, want bad-auth", d)
		}
		if g.ClaimsOurVIP(b) != tc.want {
			t.Errorf("VIP %v: ClaimsOurVIP %v", tc.vip, !tc.want)
		}
	}
	if g.ClaimsOurVIP([]byte{1, 2}) {
		t.Error("a short frame claims our VIP")
	}
}
