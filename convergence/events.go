package convergence

import (
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

// Event is an input of Step: Tick, Received, HeldScan or Command (a
// closed set).
type Event interface{ event() }

func (Tick) event()     {}
func (Received) event() {}
func (HeldScan) event() {}
func (Command) event()  {}

// Action is an output of Step: Send, InstallMarks, Lease, Reincarnate,
// Voters or Notice (a closed set).
type Action interface{ action() }

func (Send) action()         {}
func (InstallMarks) action() {}
func (Lease) action()        {}
func (Notice) action()       {}
func (Reincarnate) action()  {}
func (Voters) action()       {}

// Events, passed to Step.
type (
	// Tick is the periodic timer, every Config.Period. LocalLoss says
	// this host's own receive path lost frames since the last tick
	// (socket buffer or inbox full): its silence measurements are not to
	// be trusted for a while (see Machine.deadAfter).
	Tick struct{ LocalLoss bool }
	// Received is an authenticated message from a peer (or, with
	// SelfID set, a frame carrying our own host ID).
	Received struct {
		Msg    heartbeat.Message
		SelfID bool
	}
	// HeldScan reports, per table, the buckets in which this host still
	// holds flows (from the kernel's socket table).
	HeldScan struct {
		Held [filter.MaxRules + 1]map[uint16]bool
		// At is when the scan began, on the clock Step is given: flows
		// opened after it may be missing, so it releases only buckets
		// retained before it. A scan older than one already seen is
		// ignored.
		At time.Time
	}
	// Command is an operator command.
	Command struct {
		Op       Op
		Rule     int // for rule operations; -1 = all rules
		Settings []filter.RuleSetting
	}
)

// Op is an operator command.
type Op uint8

// Actions, returned by Step.
type (
	// Send transmits a message.
	Send struct{ Msg heartbeat.Message }
	// InstallMarks writes this host's marks into the data plane.
	InstallMarks struct {
		Marks [filter.MaxRules + 1]*filter.Marks
	}
	// Lease renews the data-plane lease for For from now; For == 0
	// expires it.
	Lease struct{ For time.Duration }
	// Reincarnate: this host takes a new incarnation (its peers knew a
	// later one of its ID than the clock gave); the agent tells its
	// guard and records it.
	Reincarnate struct{ Incarnation uint64 }
	// Voters: the dynamic voter set changed (the members of the epoch
	// just agreed); the agent records it so that a restart, or a reboot,
	// inside a partition does not found a second cluster.
	Voters struct{ Epoch, Set uint64 }
	// Notice is a change worth one log line (and an event for operators).
	Notice struct {
		Kind NoticeKind
		Host uint8
		Msg  string
	}
)

// NoticeKind names what a Notice reports. The values are the "event" key
// of the agent's log lines (docs/observability.md); append-only.
type NoticeKind string

const (
	NoticeState       NoticeKind = "state"        // this host's state changed
	NoticeJoin        NoticeKind = "join"         // a peer is heard
	NoticeLeave       NoticeKind = "leave"        // a peer left on purpose
	NoticeEvict       NoticeKind = "evict"        // a peer went silent
	NoticeDamped      NoticeKind = "damped"       // a flapping peer is held down
	NoticeRefused     NoticeKind = "refused"      // settings differ
	NoticeDuplicateID NoticeKind = "duplicate-id" // another host uses our ID
	NoticeQuorum      NoticeKind = "quorum"       // quorum lost or regained
	NoticeIncarnation NoticeKind = "incarnation"  // this host took a later incarnation
	NoticeEpoch       NoticeKind = "epoch"        // an epoch proposed or adopted
	NoticeDrained     NoticeKind = "drained"      // a drainstop completed
	// NoticePriorityConflict: live hosts share a single-host rule's
	// handling priority.
	NoticePriorityConflict NoticeKind = "priority-conflict"
	// NoticeTablesRefused: a leader's tables failed this host's checks
	// (verifyTables): a lying or broken leader.
	NoticeTablesRefused NoticeKind = "tables-refused"
)
const (
	OpStart Op = iota + 1
	OpStop
	OpDrainStop
	OpSuspend
	OpResume
	OpEnableRule
	OpDisableRule
	OpDrainRule
	OpSetSettings // reload with new per-rule settings
	// OpHealthDown drains Rule on this host because its health check
	// fails; OpHealthUp ends that. They are kept apart from the operator's
	// enable/disable/drain: a recovering check does not undo an operator's
	// disable, and an operator's enable does not override a failing check.
	OpHealthDown
	OpHealthUp
)
