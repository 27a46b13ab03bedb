package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"

	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

// Node runs one host's convergence machine on a heartbeat connection: it
// feeds ticks and authenticated frames to the machine from one goroutine
// and carries out the actions. Marks and lease actions go to Apply (the
// data plane); messages go to the connection.
type Node struct {
	m      *convergence.Machine
	conn   heartbeat.Conn
	guard  *heartbeat.Guard
	key    atomic.Pointer[heartbeat.Key] // signs what this host sends
	period time.Duration
	log    hclog.Logger
	// Apply receives InstallMarks and Lease actions; nil ignores them.
	Apply func(action convergence.Action) error
	// Scan, if set, is called before a tick for the held-flow scan, when
	// the machine has retained buckets a scan could release.
	Scan func() (convergence.HeldScan, error)
	// OnState, if set, is called (from the loop) after every state change.
	OnState func(from, to convergence.State)
	// Bind, if set, binds a host's ID to the Ethernet source of its
	// admitted heartbeats in the data plane (datapath's
	// BindHeartbeatSource); the loop calls it when the source is new, and
	// again every second, since the data plane unbinds a source that fell
	// silent.
	Bind func(id uint8, mac [6]byte) error
	// OnNotice, if set, hears every notice (from the loop; it must not
	// block): the event history.
	OnNotice func(convergence.Notice)

	bound    [filter.MaxHostID + 1]binding // loop only
	lastStep atomic.Int64                  // UnixNano of the last step's end
	inbox    chan heartbeat.Frame
	cmds     chan nodeCmd
	overflow atomic.Uint64
	lostSeen uint64 // frames lost at the last tick (loop only)
	sent     atomic.Uint64
	// sendFailing is true while heartbeats fail to go out (loop only).
	sendFailing bool
	// received counts authenticated frames per sending host (index ID-1).
	received [64]atomic.Uint64

	// foreign counts frames for our VIP with another key since the last
	// warning (at most one a minute).
	foreign     uint64
	foreignWarn time.Time

	mu     sync.Mutex // guards status, the snapshot for readers
	status Status
}

// Status is a snapshot of the node for readers outside its loop.
type Status struct {
	State convergence.State
	// Why is the reason given for the last state change.
	Why   string
	Epoch *convergence.Epoch // nil before the first; never modified
	// Heard is this host and the peers heard (bit i-1 = host i).
	Heard uint64
	// Convergences counts completed convergences (each time the host
	// reached converged after converging); LastConvergence is how long
	// the last one took.
	Convergences    uint64
	LastConvergence time.Duration
	// Overflow counts frames dropped because the inbox was full.
	Overflow uint64
	// Silent holds the peers that went quiet while taking part, with the
	// time since they were last heard (as of the last step).
	Silent map[uint8]time.Duration
	// Incarnation is this host's current one; Unverified counts peers'
	// heartbeats not admitted because they did not echo it.
	Incarnation, Unverified uint64
	// PriorityConflicts are single-host rules whose handling priority
	// live members share (convergence.PriorityConflicts).
	PriorityConflicts []convergence.PriorityConflict
	// RuleFlags are the operator's per-rule overrides (heartbeat.Rule*)
	// and HealthDown the rules drained by their health check.
	RuleFlags  []uint8
	HealthDown []bool

	convergingSince time.Time
}

// binding is a source the loop bound in the data plane, and when.
type binding struct {
	mac [6]byte
	at  time.Time
}

type nodeCmd struct {
	ev   convergence.Event
	done chan struct{}
}

// NewNode returns a Node; it starts nothing.
func NewNode(m *convergence.Machine, conn heartbeat.Conn, guard *heartbeat.Guard, key heartbeat.Key, period time.Duration, log hclog.Logger) *Node {
	n := &Node{m: m, conn: conn, guard: guard, period: period, log: log,
		inbox: make(chan heartbeat.Frame, 256), cmds: make(chan nodeCmd)}
	n.key.Store(&key)
	return n
}

// SetKeys changes the keys during a key rotation: frames are signed with
// the first and accepted under any.
func (n *Node) SetKeys(keys heartbeat.Keyring) {
	n.key.Store(&keys[0])
	n.guard.SetKeys(keys)
}

// FramesSent is the number of heartbeat frames sent.
func (n *Node) FramesSent() uint64 { return n.sent.Load() }

// FramesReceived is the number of authenticated frames accepted from
// host id (1..filter.MaxHostID).
func (n *Node) FramesReceived(id uint8) uint64 {
	if id == 0 || id > filter.MaxHostID {
		return 0
	}
	return n.received[id-1].Load()
}

// lostSinceLastTick reports whether this host's receive path lost frames
// (socket buffer or inbox full) since the last call: the machine then
// trusts its silence measurements less (Lifeguard).
func (n *Node) lostSinceLastTick() bool {
	total := n.FramesLost() + n.overflow.Load()
	lost := total > n.lostSeen
	n.lostSeen = total
	return lost
}

// FramesLost counts frames the connection lost before the node read them
// (socket buffer full, unparseable), if the connection counts them.
func (n *Node) FramesLost() uint64 {
	if c, ok := n.conn.(interface{ Dropped() uint64 }); ok {
		return c.Dropped()
	}
	return 0
}

// FramesRefused is the guard's count of frames dropped, per reason.
func (n *Node) FramesRefused() [heartbeat.NumDrops]uint64 { return n.guard.Counts() }

// State returns the machine's state and epoch number as of its last step.
func (n *Node) State() (convergence.State, uint64) {
	st := n.Status()
	if st.Epoch == nil {
		return st.State, 0
	}
	return st.State, st.Epoch.Num
}

// Status returns a snapshot of the node.
func (n *Node) Status() Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	s := n.status
	s.Overflow = n.overflow.Load()
	return s
}

// Do passes an event (an operator Command) to the machine and waits until
// it has been stepped. It fails if the node is not running.
func (n *Node) Do(ctx context.Context, ev convergence.Event) error {
	c := nodeCmd{ev: ev, done: make(chan struct{})}
	select {
	case n.cmds <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Run drives the machine until ctx ends or the connection fails. It
// returns only after its goroutines have exited.
func (n *Node) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return n.receive(ctx) })
	g.Go(func() error { return n.loop(ctx) })
	err := g.Wait()
	if errors.Is(err, context.Canceled) || errors.Is(err, heartbeat.ErrClosed) {
		return nil
	}
	return err
}

// receive reads frames and hands them to the loop through a bounded
// queue; when it is full, frames are dropped and counted.
func (n *Node) receive(ctx context.Context) error {
	for {
		b, err := n.conn.Receive(ctx)
		if err != nil {
			return err
		}
		select {
		case n.inbox <- b:
		default:
			n.overflow.Add(1)
		}
	}
}

func (n *Node) loop(ctx context.Context) error {
	t := time.NewTicker(n.period)
	defer t.Stop()
	if err := n.step(time.Now(), convergence.Tick{}); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case fr := <-n.inbox:
			b := fr.Payload
			msg, drop := n.guard.Check(b)
			if drop != heartbeat.DropNone && drop != heartbeat.DropSelf {
				n.log.Trace("heartbeat dropped", "reason", drop)
				if drop == heartbeat.DropAuth && n.guard.ClaimsOurVIP(b) {
					n.foreignKey(time.Now())
				}
				continue
			}
			if id := msg.From(); drop == heartbeat.DropNone && id >= 1 && id <= filter.MaxHostID {
				n.received[id-1].Add(1)
			}
			now := time.Now()
			if err := n.step(now, convergence.Received{Msg: msg, SelfID: drop == heartbeat.DropSelf}); err != nil {
				return err
			}
			if drop == heartbeat.DropNone {
				n.bind(now, msg, fr.Source)
			}
		case c := <-n.cmds:
			// A command, then a tick so that peers hear of it at once.
			now := time.Now()
			err := n.step(now, c.ev)
			if err == nil {
				err = n.step(now, convergence.Tick{})
			}
			close(c.done)
			if err != nil {
				return err
			}
		case now := <-t.C:
			if n.Scan != nil && n.m.NeedsScan() {
				hs, err := n.Scan()
				if err != nil {
					n.log.Warn("held-flow scan failed", "error", err)
				} else if err := n.step(now, hs); err != nil {
					return err
				}
			}
			if err := n.step(now, convergence.Tick{LocalLoss: n.lostSinceLastTick()}); err != nil {
				return err
			}
		}
	}
}

func (n *Node) step(now time.Time, ev convergence.Event) error {
	from := n.m.State()
	var why string
	for _, a := range n.m.Step(now, ev) {
		switch a := a.(type) {
		case convergence.Send:
			b, err := heartbeat.Marshal(a.Msg, n.key.Load())
			if err != nil {
				return fmt.Errorf("marshal heartbeat: %w", err)
			}
			// One warning per streak of failures (a link that is down
			// fails every period), and one line when sending works again.
			if err := n.conn.Send(b); err != nil {
				if !n.sendFailing {
					n.log.Warn("heartbeat send failed; retrying every period", "error", err)
				}
				n.sendFailing = true
			} else {
				if n.sendFailing {
					n.log.Info("heartbeat send works again")
				}
				n.sendFailing = false
				n.sent.Add(1)
			}
		case convergence.Reincarnate:
			n.guard.SetOwnIncarnation(a.Incarnation)
			if n.Apply != nil {
				if err := n.Apply(a); err != nil {
					return fmt.Errorf("apply %T: %w", a, err)
				}
			}
		case convergence.Notice:
			// Stable keys for log pipelines: event, host, detail.
			n.log.Info("cluster event", "event", a.Kind, "host", a.Host, "detail", a.Msg)
			if n.OnNotice != nil {
				n.OnNotice(a)
			}
			if a.Kind == convergence.NoticeState {
				why = a.Msg
			}
		default:
			if n.Apply != nil {
				if err := n.Apply(a); err != nil {
					return fmt.Errorf("apply %T: %w", a, err)
				}
			}
		}
	}
	to := n.m.State()
	n.mu.Lock()
	st := &n.status
	st.State, st.Epoch, st.Heard, st.Silent = to, n.m.Epoch(), n.m.Heard(now), n.m.Silent(now)
	st.Incarnation, st.Unverified = n.m.Incarnation(), n.m.Unverified()
	st.PriorityConflicts = n.m.PriorityConflicts()
	st.RuleFlags, st.HealthDown = n.m.RuleFlags(), n.m.HealthDown()
	if why != "" {
		st.Why = why
	}
	converged := func(s convergence.State) bool {
		return s == convergence.StateConverged || s == convergence.StateDefault
	}
	if to == convergence.StateConverging && st.convergingSince.IsZero() {
		st.convergingSince = now
	}
	if converged(to) && !st.convergingSince.IsZero() {
		st.Convergences++
		st.LastConvergence = now.Sub(st.convergingSince)
		st.convergingSince = time.Time{}
	}
	n.mu.Unlock()
	n.lastStep.Store(time.Now().UnixNano())
	if from != to && n.OnState != nil {
		n.OnState(from, to)
	}
	return nil
}

// foreignKey warns, at most once a minute, that frames announcing this
// cluster's VIP arrive signed with another key: a second cluster with the
// same VIP on the segment, or a host with the wrong key file. Such a
// cluster's hosts would answer clients too.
func (n *Node) foreignKey(now time.Time) {
	n.foreign++
	if now.Sub(n.foreignWarn) < time.Minute {
		return
	}
	n.log.Warn("heartbeats for this cluster's VIP signed with another key: a second cluster with the same VIP, or a host with the wrong key file, is on the segment",
		"frames", n.foreign)
	n.foreign, n.foreignWarn = 0, now
}

// bind binds the sender of msg to source in the data plane once the
// machine admitted the frame (authentic, fresh, echoing our incarnation),
// when the source is new to the loop or last bound a second ago.
func (n *Node) bind(now time.Time, msg heartbeat.Message, source [6]byte) {
	hb, ok := msg.(*heartbeat.Heartbeat)
	if !ok || n.Bind == nil || source == ([6]byte{}) || !n.m.Admitted(hb.HostID, hb.Incarnation) {
		return
	}
	b := &n.bound[hb.HostID]
	if b.mac == source && now.Sub(b.at) < time.Second {
		return
	}
	if err := n.Bind(hb.HostID, source); err != nil {
		n.log.Warn("bind heartbeat source", "host", hb.HostID, "error", err)
		return
	}
	if b.mac != source {
		n.log.Info("heartbeat source bound", "host", hb.HostID, "mac", net.HardwareAddr(source[:]).String())
	}
	*b = binding{mac: source, at: now}
}

// LastStep is when the loop last stepped the machine (zero before it ran).
func (n *Node) LastStep() time.Time { return time.Unix(0, n.lastStep.Load()) }
