package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestNextIncarnation: incarnations grow across restarts even when the
// clock steps back; a garbled record is replaced.
func TestNextIncarnation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "eth0.incarnation")
	t0 := time.Unix(1_800_000_000, 0)
	a, prev, err := nextIncarnation(p, t0)
	if err != nil || a != uint64(t0.UnixNano()) || prev != 0 {
		t.Fatalf("first: %d (prev %d) %v", a, prev, err)
	}
	b, prev, _ := nextIncarnation(p, t0.Add(-2*time.Minute)) // the clock stepped back 2 minutes
	if b != a+1 || prev != a {
		t.Fatalf("after a clock step back: %d (prev %d), want %d (prev %d)", b, prev, a+1, a)
	}
	c, prev, _ := nextIncarnation(p, t0.Add(time.Hour))
	if c != uint64(t0.Add(time.Hour).UnixNano()) || prev != b {
		t.Fatalf("clock ahead again: %d (prev %d)", c, prev)
	}
	os.WriteFile(p, []byte("garbage"), 0o600)
	d, prev, err := nextIncarnation(p, t0)
	if err != nil || d != uint64(t0.UnixNano()) || prev != 0 {
		t.Fatalf("garbled record: %d (prev %d) %v", d, prev, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v", fi.Mode())
	}
}

// TestVotersRecord: the voter set and its epoch survive a round trip; a
// missing or garbled record reads as none.
func TestVotersRecord(t *testing.T) {
	p := filepath.Join(t.TempDir(), "eth0.voters")
	if e, v := readVoters(p); e != 0 || v != 0 {
		t.Fatalf("no record: %d %b", e, v)
	}
	if err := recordVoters(p, 57, 0b1011); err != nil {
		t.Fatal(err)
	}
	if e, v := readVoters(p); e != 57 || v != 0b1011 {
		t.Fatalf("round trip: %d %b", e, v)
	}
	for _, bad := range []string{"57", "57 x", "1 2 3", ""} {
		os.WriteFile(p, []byte(bad), 0o600)
		if e, v := readVoters(p); e != 0 || v != 0 {
			t.Errorf("record %q read as %d %b", bad, e, v)
		}
	}
}
