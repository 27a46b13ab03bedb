package convergence

import "fmt"

// State is a host's convergence state as operators see it (NLB's words).
//
//	           start                 listened D,           all hosts heard
//	Stopped ──────────► Joining ───  epoch adopted ──► Converging ─ opened ─► Converged
//	   ▲  ▲                │                              ▲   │               (as default
//	   │  │ stop           │ duplicate ID / config        │   │ membership     when leader)
//	   │  └────────────────┤ mismatch                     │   ▼ changes
//	   │                   ▼                              └─ Converged
//	   │               Refused
//	   │  drained or timeout
//	   └────────────────── Draining ◄── drainstop (from Converging/Converged)
//	Suspended: like Stopped, and only resume leaves it.
type State uint8

// States; the zero value is invalid. Values travel in heartbeats:
// append-only.
const (
	StateStopped    State = 1
	StateJoining    State = 2
	StateConverging State = 3
	StateConverged  State = 4
	StateDefault    State = 5 // converged, and this host is the default host
	StateDraining   State = 6
	StateSuspended  State = 7
	StateRefused    State = 8
)

// States lists every valid state, in value order.
func States() []State {
	out := make([]State, 0, StateRefused)
	for s := StateStopped; s <= StateRefused; s++ {
		out = append(out, s)
	}
	return out
}

func (s State) String() string {
	switch s {
	case StateStopped:
		return "stopped"
	case StateJoining:
		return "joining"
	case StateConverging:
		return "converging"
	case StateConverged:
		return "converged"
	case StateDefault:
		return "converged as default"
	case StateDraining:
		return "draining"
	case StateSuspended:
		return "suspended"
	case StateRefused:
		return "refused"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Active reports whether a host in state s takes part in the membership.
func (s State) Active() bool {
	return s == StateConverging || s == StateConverged || s == StateDefault || s == StateDraining
}

// Handoff phases, advertised in heartbeats. Append-only.
const (
	phaseNone   uint8 = 0 // epoch not adopted yet
	phaseClosed uint8 = 1 // adopted: closed every bucket not ours in this epoch
	phaseOpen   uint8 = 2 // opened the buckets this epoch gives us
)
