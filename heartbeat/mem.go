package heartbeat

import (
	"context"
	"errors"
	"math/rand/v2"
	"sort"
	"sync"
	"time"
)

// Network is an in-memory L2 segment for tests: every frame sent by one
// endpoint reaches the others in its partition, subject to loss,
// duplication and a random delay (which reorders frames). It is driven by
// a clock: Advance(now) delivers what is due, so simulations with a fake
// clock are deterministic for a given seed; Run drives it in real time.
type Network struct {
	mu    sync.Mutex
	rng   *rand.Rand
	now   time.Time
	ends  map[string]*MemConn
	queue []inflight
	seq   uint64 // tie-break for equal delivery times
	// Settings, changed with Set*.
	loss, dup          float64
	minDelay, maxDelay time.Duration
	group              map[string]int
	linkLoss           map[[2]string]float64
}

type inflight struct {
	at   time.Time
	seq  uint64
	to   *MemConn
	data []byte
}

// NewNetwork returns a lossless network with no delay.
func NewNetwork(seed uint64, now time.Time) *Network {
	return &Network{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now:      now,
		ends:     map[string]*MemConn{},
		group:    map[string]int{},
		linkLoss: map[[2]string]float64{},
	}
}

// SetLoss sets the probability that a frame is lost on its way to each
// receiver, and the probability that it is duplicated.
func (n *Network) SetLoss(loss, dup float64) {
	n.mu.Lock()
	n.loss, n.dup = loss, dup
	n.mu.Unlock()
}

// SetDelay sets the delivery delay range; a range wider than the gap
// between frames reorders them.
func (n *Network) SetDelay(min, max time.Duration) {
	n.mu.Lock()
	n.minDelay, n.maxDelay = min, max
	n.mu.Unlock()
}

// SetLinkLoss sets an extra loss probability for frames from one endpoint
// to another (asymmetric links).
func (n *Network) SetLinkLoss(from, to string, loss float64) {
	n.mu.Lock()
	n.linkLoss[[2]string{from, to}] = loss
	n.mu.Unlock()
}

// Partition splits the network: endpoints in different groups do not hear
// each other. Endpoints not named are in group 0 with each other.
func (n *Network) Partition(groups ...[]string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.group = map[string]int{}
	for i, g := range groups {
		for _, name := range g {
			n.group[name] = i + 1
		}
	}
}

// Heal removes every partition.
func (n *Network) Heal() { n.Partition() }

// Join attaches a new endpoint.
func (n *Network) Join(name string) *MemConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := &MemConn{net: n, name: name, inbox: make(chan []byte, 1024), done: make(chan struct{})}
	n.ends[name] = c
	return c
}

func (n *Network) send(from *MemConn, msg []byte) {
	n.mu.Lock()
	defer n.mu.Unlock()
	names := make([]string, 0, len(n.ends))
	for name := range n.ends {
		names = append(names, name)
	}
	sort.Strings(names) // deterministic use of the random source
	for _, name := range names {
		to := n.ends[name]
		if to == from || n.group[name] != n.group[from.name] {
			continue
		}
		copies := 1
		if n.rng.Float64() < n.dup {
			copies = 2
		}
		for i := 0; i < copies; i++ {
			if n.rng.Float64() < n.loss || n.rng.Float64() < n.linkLoss[[2]string{from.name, name}] {
				continue
			}
			d := n.minDelay
			if n.maxDelay > n.minDelay {
				d += time.Duration(n.rng.Int64N(int64(n.maxDelay - n.minDelay)))
			}
			n.seq++
			n.queue = append(n.queue, inflight{at: n.now.Add(d), seq: n.seq, to: to, data: append([]byte(nil), msg...)})
		}
	}
}

// Advance moves the network's clock to now and delivers every frame due
// by then, in delivery-time order.
func (n *Network) Advance(now time.Time) {
	n.mu.Lock()
	n.now = now
	sort.Slice(n.queue, func(i, j int) bool {
		if !n.queue[i].at.Equal(n.queue[j].at) {
			return n.queue[i].at.Before(n.queue[j].at)
		}
		return n.queue[i].seq < n.queue[j].seq
	})
	i := 0
	for ; i < len(n.queue) && !n.queue[i].at.After(now); i++ {
		f := n.queue[i]
		select {
		case f.to.inbox <- f.data:
		default:
			f.to.overflow++
		}
	}
	n.queue = n.queue[i:]
	n.mu.Unlock()
}

// Run drives the network with the real clock until ctx ends.
func (n *Network) Run(ctx context.Context) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n.Advance(now)
		}
	}
}

// MemConn is one endpoint of a Network.
type MemConn struct {
	net      *Network
	name     string
	inbox    chan []byte
	done     chan struct{}
	once     sync.Once
	overflow uint64 // frames dropped because the inbox was full
}

var _ Conn = (*MemConn)(nil)

// ErrClosed is returned by a closed Conn.
var ErrClosed = errors.New("heartbeat: connection closed")

// Send transmits msg to every other endpoint in the same partition.
func (c *MemConn) Send(msg []byte) error {
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	c.net.send(c, msg)
	return nil
}

// Receive returns the next delivered frame (with no source address).
func (c *MemConn) Receive(ctx context.Context) (Frame, error) {
	select {
	case b := <-c.inbox:
		return Frame{Payload: b}, nil
	case <-c.done:
		return Frame{}, ErrClosed
	case <-ctx.Done():
		return Frame{}, ctx.Err()
	}
}

// TryReceive returns a delivered frame without blocking.
func (c *MemConn) TryReceive() ([]byte, bool) {
	select {
	case b := <-c.inbox:
		return b, true
	default:
		return nil, false
	}
}

// Close detaches the endpoint.
// Dropped is the number of frames lost because the inbox was full (as
// PacketConn.Dropped counts a full socket buffer).
func (c *MemConn) Dropped() uint64 {
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	return c.overflow
}

func (c *MemConn) Close() error {
	c.once.Do(func() {
		close(c.done)
		c.net.mu.Lock()
		delete(c.net.ends, c.name)
		c.net.mu.Unlock()
	})
	return nil
}
