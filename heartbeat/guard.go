package heartbeat

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/nlbproject/nlb/filter"
)

// Drop is why a received frame was refused. Values are append-only.
type Drop uint8

const (
	DropNone Drop = iota
	DropShort
	DropOversized
	DropMagic
	DropVersion
	DropType
	DropLength
	DropAuth
	DropInvalid
	DropForeign // another cluster's VIP
	DropStale   // older incarnation of a host
	DropReplay  // sequence not newer than the last one seen
	DropSelf    // our own frame, looped back
	// DropImplausible: an incarnation more than a day ahead of this
	// host's clock (incarnations are start times); refusing it keeps a
	// key holder from claiming an ID for good with 2^64-1.
	DropImplausible
	numDrops
)

// NumDrops is the number of Drop values.
const NumDrops = int(numDrops)

var dropNames = [numDrops]string{"none", "short", "oversized", "bad-magic", "bad-version",
	"unknown-type", "bad-length", "bad-auth", "invalid", "foreign-cluster", "stale", "replay", "self", "implausible"}

func (d Drop) String() string {
	if int(d) < len(dropNames) {
		return dropNames[d]
	}
	return "drop(?)"
}

// dropOf maps an Unmarshal error to its reason.
func dropOf(err error) Drop {
	for _, m := range []struct {
		err  error
		drop Drop
	}{
		{ErrShort, DropShort}, {ErrOversized, DropOversized}, {ErrMagic, DropMagic},
		{ErrVersion, DropVersion}, {ErrType, DropType}, {ErrLength, DropLength},
		{ErrAuth, DropAuth}, {ErrInvalid, DropInvalid},
	} {
		if errors.Is(err, m.err) {
			return m.drop
		}
	}
	return DropInvalid
}

// Guard authenticates frames and refuses foreign, stale and replayed ones.
// Per host it remembers the newest incarnation and, as IPsec and WireGuard
// do, a window of the last ReplayWindow sequence numbers: a frame is
// accepted if it is from a newer incarnation, or from the same incarnation
// with a sequence number above the window or inside it and not seen yet.
// Frames may be reordered (a heartbeat overtaken by the table chunks sent
// after it) without being lost. Heartbeats and table chunks share one
// sequence space per sender.
type Guard struct {
	cluster netip.Addr
	self    uint8
	// Now is the clock the plausibility check uses (time.Now if nil).
	Now func() time.Time

	mu     sync.Mutex
	keys   Keyring
	last   [filter.MaxHostID + 1]replayState
	counts [numDrops]uint64
}

// Keyring is the keys frames may be signed with: the current key first,
// then the next one during a key rotation (docs/operations.md). Frames
// are signed with the first.
type Keyring []Key

// ReplayWindow is how far below the highest sequence number seen a frame
// may arrive and still be accepted (once).
const ReplayWindow = 64

type replayState struct {
	inc, top uint64
	seen     uint64 // bit i: sequence top-i was seen
}

// accept records seq and reports whether it is new.
func (r *replayState) accept(seq uint64) bool {
	switch {
	case seq > r.top:
		shift := seq - r.top
		if shift >= ReplayWindow {
			r.seen = 0
		} else {
			r.seen <<= shift
		}
		r.seen |= 1
		r.top = seq
		return true
	case r.top-seq >= ReplayWindow:
		return false
	default:
		bit := uint64(1) << (r.top - seq)
		if r.seen&bit != 0 {
			return false
		}
		r.seen |= bit
		return true
	}
}

// NewGuard returns a Guard for the cluster with primary VIP cluster, as
// host self (its own frames are refused).
func NewGuard(keys Keyring, cluster netip.Addr, self uint8) *Guard {
	return &Guard{keys: keys, cluster: cluster, self: self}
}

// SetOwnIncarnation tells the guard this host's incarnation: frames with
// our ID from an earlier incarnation (replays of an earlier life) are
// stale; a later one is another host with our ID (DropSelf).
func (g *Guard) SetOwnIncarnation(inc uint64) {
	g.mu.Lock()
	g.last[g.self] = replayState{inc: inc}
	g.mu.Unlock()
}

// MaxIncarnationAhead bounds how far an incarnation (a start time in
// Unix ns) may be ahead of this host's clock.
const MaxIncarnationAhead = 24 * time.Hour

// SetKeys replaces the keyring (a reload during a key rotation).
func (g *Guard) SetKeys(keys Keyring) {
	g.mu.Lock()
	g.keys = keys
	g.mu.Unlock()
}

// Check decodes and vets one frame payload. It returns the message, or nil
// and the reason it was dropped (also counted). A frame carrying this
// host's own ID is returned with DropSelf: another host uses our ID.
func (g *Guard) Check(b []byte) (Message, Drop) {
	g.mu.Lock()
	keys := g.keys
	g.mu.Unlock()
	var m Message
	err := ErrAuth
	for i := 0; i < len(keys) && errors.Is(err, ErrAuth); i++ {
		m, err = Unmarshal(b, &keys[i])
	}
	if err != nil {
		return nil, g.count(dropOf(err))
	}
	var vip netip.Addr
	var id uint8
	var inc, seq uint64
	switch m := m.(type) {
	case *Heartbeat:
		vip, id, inc, seq = m.ClusterVIP, m.HostID, m.Incarnation, m.Seq
	case *TableChunk:
		vip, id, inc, seq = m.ClusterVIP, m.HostID, m.Incarnation, m.Seq
	}
	if vip != g.cluster {
		return nil, g.count(DropForeign)
	}
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	if ahead := uint64(now().Add(MaxIncarnationAhead).UnixNano()); inc > ahead {
		return nil, g.count(DropImplausible)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Our own ID is checked like any other: an earlier incarnation's
	// frame is stale (a replay of our earlier life), a repeated one a
	// replay. What passes is ours looped back, or another host's with
	// our ID (DropSelf: the caller decides).
	l := &g.last[id]
	if inc < l.inc {
		g.counts[DropStale]++
		return nil, DropStale
	}
	if inc > l.inc {
		*l = replayState{inc: inc}
	}
	if !l.accept(seq) {
		g.counts[DropReplay]++
		return nil, DropReplay
	}
	if id == g.self {
		g.counts[DropSelf]++
		return m, DropSelf
	}
	g.counts[DropNone]++
	return m, DropNone
}

// ClaimsOurVIP reports whether frame b, authentic or not, names this
// guard's cluster VIP (an unauthenticated field: use it to explain a
// refusal, never to trust a frame).
func (g *Guard) ClaimsOurVIP(b []byte) bool {
	return len(b) >= 12 && netip.AddrFrom4([4]byte(b[8:12])) == g.cluster
}

func (g *Guard) count(d Drop) Drop {
	g.mu.Lock()
	g.counts[d]++
	g.mu.Unlock()
	return d
}

// Counts returns frames accepted (index DropNone) and dropped per reason.
func (g *Guard) Counts() [NumDrops]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counts
}
