package heartbeat

import "time"

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
