package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sync/errgroup"

	"github.com/nlbproject/nlb/convergence"
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
	key    heartbeat.Key
	period time.Duration
	log    hclog.Logger
	// Apply receives InstallMarks and Lease actions; nil ignores them.
	Apply func(action any) error
	// Scan, if set, is called before every tick for the held-flow scan.
	Scan func() (convergence.HeldScan, error)

	inbox    chan []byte
	overflow atomic.Uint64

	mu    sync.Mutex // guards state and epoch, the snapshot for readers
	state convergence.State
	epoch uint64
}

// NewNode returns a Node; it starts nothing.
func NewNode(m *convergence.Machine, conn heartbeat.Conn, guard *heartbeat.Guard, key heartbeat.Key, period time.Duration, log hclog.Logger) *Node {
	return &Node{m: m, conn: conn, guard: guard, key: key, period: period, log: log, inbox: make(chan []byte, 256)}
}

// State returns the machine's state and epoch as of its last step.
func (n *Node) State() (convergence.State, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state, n.epoch
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
		case b := <-n.inbox:
			msg, drop := n.guard.Check(b)
			if drop != heartbeat.DropNone && drop != heartbeat.DropSelf {
				n.log.Trace("heartbeat dropped", "reason", drop)
				continue
			}
			if err := n.step(time.Now(), convergence.Received{Msg: msg, SelfID: drop == heartbeat.DropSelf}); err != nil {
				return err
			}
		case now := <-t.C:
			if n.Scan != nil {
				hs, err := n.Scan()
				if err != nil {
					n.log.Warn("held-flow scan failed", "error", err)
				} else if err := n.step(now, hs); err != nil {
					return err
				}
			}
			if err := n.step(now, convergence.Tick{}); err != nil {
				return err
			}
		}
	}
}

func (n *Node) step(now time.Time, ev any) error {
	for _, a := range n.m.Step(now, ev) {
		switch a := a.(type) {
		case convergence.Send:
			b, err := heartbeat.Marshal(a.Msg, &n.key)
			if err != nil {
				return fmt.Errorf("marshal heartbeat: %w", err)
			}
			if err := n.conn.Send(b); err != nil {
				n.log.Warn("heartbeat send failed", "error", err)
			}
		case convergence.Event:
			n.log.Info(a.Kind, "host", a.Host, "detail", a.Msg)
		default:
			if n.Apply != nil {
				if err := n.Apply(a); err != nil {
					return fmt.Errorf("apply %T: %w", a, err)
				}
			}
		}
	}
	n.mu.Lock()
	n.state = n.m.State()
	if e := n.m.Epoch(); e != nil {
		n.epoch = e.Num
	}
	n.mu.Unlock()
	return nil
}
