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
	a, err := nextIncarnation(p, t0)
	if err != nil || a != uint64(t0.UnixNano()) {
		t.Fatalf("first: %d %v", a, err)
	}
	b, _ := nextIncarnation(p, t0.Add(-2*time.Minute)) // the clock stepped back 2 minutes
	if b != a+1 {
		t.Fatalf("after a clock step back: %d, want %d", b, a+1)
	}
	c, _ := nextIncarnation(p, t0.Add(time.Hour))
	if c != uint64(t0.Add(time.Hour).UnixNano()) {
		t.Fatalf("clock ahead again: %d", c)
	}
	os.WriteFile(p, []byte("garbage"), 0o600)
	d, err := nextIncarnation(p, t0)
	if err != nil || d != uint64(t0.UnixNano()) {
		t.Fatalf("garbled record: %d %v", d, err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Fatalf("record mode %v", fi.Mode())
	}
}
