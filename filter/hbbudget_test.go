package filter

import (
	"testing"
	"time"
)

func hbFrame(id byte, mac byte) []byte {
	f := make([]byte, ethHdrLen+13)
	copy(f[6:12], []byte{2, 0, 0, 0, 0, mac})
	f[ethHdrLen+12] = id
	return f
}

// TestHeartbeatSourcesBudget: an unbound host ID's frames share the open
// budget (a burst of 4, then one per interval), whatever their source;
// once bound, only the bound source passes, within a budget of its own (a
// burst of 6), until it has been silent for Stale; IDs out of range are
// malformed.
func TestHeartbeatSourcesBudget(t *testing.T) {
	b := HeartbeatBudget{Interval: time.Millisecond, Tolerance: 5 * time.Millisecond, Stale: 100 * time.Millisecond,
		OpenInterval: time.Millisecond, OpenTolerance: 3 * time.Millisecond}
	var h HeartbeatSources
	now := uint64(time.Second)
	ms := uint64(time.Millisecond)
	want := func(id, mac byte, at uint64, r Reason) {
		t.Helper()
		if got := h.Admit(b, hbFrame(id, mac), at); got != r {
			t.Fatalf("host %d from source %d at +%v: %v, want %v", id, mac, time.Duration(at-now), got, r)
		}
	}
	// Unbound: sources 1 and 2 share host 1's budget of 4 back to back.
	want(1, 1, now, ReasonPassHeartbeat)
	want(1, 2, now, ReasonPassHeartbeat)
	want(1, 1, now, ReasonPassHeartbeat)
	want(1, 2, now, ReasonPassHeartbeat)
	want(1, 1, now, ReasonDropHBBudget)
	want(1, 2, now+ms, ReasonPassHeartbeat) // one interval later, one more
	want(1, 1, now+ms, ReasonDropHBBudget)
	want(2, 2, now+ms, ReasonPassHeartbeat) // host 2 has a budget of its own
	// Bound to source 1 (fresh budget): source 2 is refused, even over
	// source 1's budget, until source 1 has been silent for Stale.
	h.Bind(1, [6]byte{2, 0, 0, 0, 0, 1}, now+2*ms)
	for i := 0; i < 6; i++ {
		want(1, 1, now+2*ms, ReasonPassHeartbeat)
	}
	want(1, 1, now+2*ms, ReasonDropHBBudget) // still shows source 1 alive
	want(1, 2, now+2*ms, ReasonDropHBSource)
	want(1, 2, now+2*ms+100*ms-1, ReasonDropHBSource)
	want(1, 1, now+50*ms, ReasonPassHeartbeat)
	want(1, 2, now+149*ms, ReasonDropHBSource)
	want(1, 2, now+150*ms, ReasonPassHeartbeat) // silent for Stale: unbound
	want(1, 1, now+150*ms, ReasonPassHeartbeat) // anyone, within the shared budget
	// A holder stamped after now (another CPU) is fresh, not stale.
	h.Bind(5, [6]byte{2, 0, 0, 0, 0, 5}, now+ms)
	want(5, 6, now, ReasonDropHBSource)
	want(0, 1, now, ReasonDropMalformed)
	want(MaxHostID+1, 1, now, ReasonDropMalformed)
	want(MaxHostID, 1, now, ReasonPassHeartbeat)
	if got := h.Admit(HeartbeatBudget{}, hbFrame(1, 9), now); got != ReasonPassHeartbeat {
		t.Fatalf("no budget: %v", got)
	}
}
