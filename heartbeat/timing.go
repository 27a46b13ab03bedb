package heartbeat

import (
	"time"

	"github.com/nlbproject/nlb/filter"
)

// Timing is the heartbeat timing every host of a cluster shares, and the
// one place where the durations derived from it are computed.
type Timing struct {
	// Period is the interval between two heartbeats of one host.
	Period time.Duration
	// LossTolerance: a peer not heard for LossTolerance periods is dead.
	LossTolerance int
}

// DeadAfter is how long a silent peer stays alive in the view.
func (t Timing) DeadAfter() time.Duration { return time.Duration(t.LossTolerance) * t.Period }

// LeaseFor is how long each lease renewal lets the kernel take new flows:
// two periods shorter than DeadAfter, so a host whose agent died has
// stopped taking new flows before any peer can declare it dead.
func (t Timing) LeaseFor() time.Duration {
	return max(time.Duration(t.LossTolerance-2)*t.Period, t.Period)
}

// Budget is the data plane's per-source budget for a cluster with this
// many port rules (filter.HeartbeatBudget). The most a real host sends in
// one period is one heartbeat and, as the source of the tables while a
// peer lags, every table in chunks: F = 1 + (rules+1)·chunks per table.
// The budget allows twice that, on average and in one burst. A source
// holds its host ID until it has been silent for DeadAfter: by then the
// cluster has declared it dead anyway. An unbound ID (a host not yet
// admitted sends heartbeats only) gets 2 frames a period, 4 in a burst.
func (t Timing) Budget(rules int) filter.HeartbeatBudget {
	f := 1 + (rules+1)*(filter.Buckets/ChunkLen)
	interval := t.Period / time.Duration(2*f)
	return filter.HeartbeatBudget{
		Interval:      interval,
		Tolerance:     time.Duration(2*f-1) * interval,
		Stale:         t.DeadAfter(),
		OpenInterval:  t.Period / 2,
		OpenTolerance: 3 * t.Period / 2,
	}
}
