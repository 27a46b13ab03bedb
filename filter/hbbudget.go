package filter

import (
	"time"
)

// HeartbeatBudget is the data plane's limit on frames of the heartbeat
// ethertype, per claimed host ID (a frame's byte 12 after the Ethernet
// header). It is cheap and keyless, so it cannot tell a real frame from a
// forgery by itself; what it does is keep a flood of well-formed
// forgeries from crowding the real frames out of the agent's socket,
// where each would cost an HMAC: see HeartbeatSources.
type HeartbeatBudget struct {
	// Interval is one frame's share of the budget (the GCRA emission
	// interval): a source may send one frame per Interval on average. 0
	// turns the budget off.
	Interval time.Duration
	// Tolerance is how far ahead of that pace a source may run: a burst
	// of Tolerance/Interval + 1 frames passes back to back.
	Tolerance time.Duration
	// Stale is how long the source bound to a host ID must be silent
	// before the ID is unbound.
	Stale time.Duration
	// OpenInterval and OpenTolerance are the budget all frames claiming
	// an unbound host ID share (a joining host's, before it is admitted).
	OpenInterval, OpenTolerance time.Duration
}

// HeartbeatSources is the reference model of the eBPF program's
// nlb_hb_sources map and hb_admit. Once the agent has admitted a host's
// authenticated heartbeats arriving from an Ethernet source, it binds the
// host's ID to that source (Bind); frames claiming the ID from any other
// source are then dropped (ReasonDropHBSource) until the bound source has
// been silent for Stale. The bound source's frames pass within a budget
// of their own (ReasonDropHBBudget beyond it); while an ID is unbound
// (a host joining, or one whose source changed), all frames claiming it
// share a smaller one (OpenInterval, OpenTolerance).
//
// What this buys: forgeries from other Ethernet addresses never reach
// the agent for a host ID in use; forgeries of unbound IDs reach it at
// most at 64 open budgets' rate; a forger flooding a joining host's ID only
// delays it (one of its frames must get through the shared budget to be
// bound). A forger that copies a live host's Ethernet address as well can
// spend that host's budget (its heartbeats are then lost and the others
// evict it, which is safe: it stops taking new flows);
// docs/reliability.md has the whole table.
type HeartbeatSources struct {
	src [MaxHostID + 1]hbSource
}

type hbSource struct {
	mac       [6]byte
	verified  bool
	tat, last uint64 // ns on the data plane's monotonic clock
}

// Admit decides a heartbeat-ethertype frame that Decide passed
// (ReasonPassHeartbeat), at now (monotonic ns): it returns
// ReasonPassHeartbeat, ReasonDropHBSource, ReasonDropHBBudget or, for a
// host ID out of range, ReasonDropMalformed.
func (h *HeartbeatSources) Admit(b HeartbeatBudget, frame []byte, now uint64) Reason {
	if b.Interval <= 0 {
		return ReasonPassHeartbeat
	}
	if len(frame) < ethHdrLen+13 {
		return ReasonDropMalformed
	}
	id := frame[ethHdrLen+12]
	if id == 0 || id > MaxHostID {
		return ReasonDropMalformed
	}
	s := &h.src[id]
	interval, tolerance := b.OpenInterval, b.OpenTolerance
	if s.verified {
		if [6]byte(frame[6:12]) != s.mac {
			// Signed, as in the kernel: a holder stamped after now (by
			// another CPU) is fresh.
			if int64(now-s.last) < int64(b.Stale) {
				return ReasonDropHBSource
			}
			s.verified = false // the bound source went silent: unbound
		} else {
			s.last = now
			interval, tolerance = b.Interval, b.Tolerance
		}
	}
	tat := max(s.tat, now)
	if tat-now > uint64(tolerance) {
		return ReasonDropHBBudget
	}
	s.tat = tat + uint64(interval)
	return ReasonPassHeartbeat
}

// Bind binds host id to the Ethernet source mac at now, with a fresh
// budget: what the agent writes when it admits id's frames from mac.
func (h *HeartbeatSources) Bind(id uint8, mac [6]byte, now uint64) {
	if id == 0 || id > MaxHostID {
		return
	}
	h.src[id] = hbSource{mac: mac, verified: true, last: now}
}
