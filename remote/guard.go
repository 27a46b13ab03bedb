package remote

import (
	"net/netip"
	"sync"
	"time"
)

// Refusal is why a datagram was not executed. Values are append-only.
type Refusal uint8

const (
	RefusedNone       Refusal = iota
	RefusedMalformed          // short, oversized, bad magic, version, kind or length
	RefusedAuth               // the tag does not verify with our key
	RefusedStale              // timestamp outside MaxSkew of our clock
	RefusedReplay             // nonce already seen within the window
	RefusedRateLimit          // the source sent too many requests
	RefusedNotRequest         // a reply (or anything but a request) sent to the server
	RefusedUnknown            // authentic, but the command is unknown
	RefusedCacheFull          // too many nonces live to remember one more
	numRefusals
)

// NumRefusals is the number of Refusal values.
const NumRefusals = int(numRefusals)

var refusalNames = [numRefusals]string{"none", "malformed", "bad-auth", "stale", "replay",
	"rate-limited", "not-request", "unknown-command", "replay-cache-full"}

func (r Refusal) String() string {
	if int(r) < len(refusalNames) {
		return refusalNames[r]
	}
	return "refusal(?)"
}

// Limits of the guard. They are documented in docs/protocol.md.
const (
	// MaxSkew is how far a request's timestamp may be from the host's
	// clock. Nonces are remembered for twice as long, so a request can
	// never be replayed: once its nonce is forgotten, its timestamp is
	// stale.
	MaxSkew = 30 * time.Second
	// MaxNonces bounds the replay cache. Only authentic requests enter it,
	// so filling it needs the key.
	MaxNonces = 65536
	// RatePerSecond and RateBurst are each source address's token bucket.
	RatePerSecond = 20
	RateBurst     = 40
	// maxSources bounds the rate limiter's table.
	maxSources = 4096
)

// Guard decides, before anything is executed, whether a request is
// authentic, fresh, not a replay and within its source's rate. It counts
// every refusal.
type Guard struct {
	key Key

	mu      sync.Mutex
	nonces  map[[16]byte]time.Time // nonce -> when it may be forgotten
	sources map[netip.Addr]*bucket
	counts  [numRefusals]uint64
	pruned  time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewGuard returns a guard for key.
func NewGuard(key Key) *Guard {
	return &Guard{key: key, nonces: map[[16]byte]time.Time{}, sources: map[netip.Addr]*bucket{}}
}

// Check decodes and vets one datagram from src received at now. It returns
// the request when it may be executed; otherwise the refusal (counted) and,
// when it could be decoded, the message (for an unauthenticated refusal
// reply).
func (g *Guard) Check(b []byte, src netip.Addr, now time.Time) (*Message, Refusal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.pruned) > time.Second {
		g.prune(now)
	}
	if !g.allow(src, now) {
		return g.refuse(nil, RefusedRateLimit)
	}
	m, err := Unmarshal(b, nil)
	if err != nil {
		return g.refuse(nil, RefusedMalformed)
	}
	if m.Kind != KindRequest {
		return g.refuse(nil, RefusedNotRequest)
	}
	if _, err := Unmarshal(b, &g.key); err != nil {
		return g.refuse(m, RefusedAuth)
	}
	if d := now.Sub(time.Unix(0, m.Timestamp)); d > MaxSkew || d < -MaxSkew {
		return g.refuse(m, RefusedStale)
	}
	if _, seen := g.nonces[m.Nonce]; seen {
		return g.refuse(m, RefusedReplay)
	}
	if len(g.nonces) >= MaxNonces {
		return g.refuse(m, RefusedCacheFull)
	}
	g.nonces[m.Nonce] = now.Add(2 * MaxSkew)
	if !m.Command.Valid() {
		return g.refuse(m, RefusedUnknown)
	}
	return m, RefusedNone
}

func (g *Guard) refuse(m *Message, r Refusal) (*Message, Refusal) {
	g.counts[r]++
	return m, r
}

// allow takes a token from src's bucket.
func (g *Guard) allow(src netip.Addr, now time.Time) bool {
	b := g.sources[src]
	if b == nil {
		if len(g.sources) >= maxSources {
			return false
		}
		b = &bucket{tokens: RateBurst, last: now}
		g.sources[src] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * RatePerSecond
	if b.tokens > RateBurst {
		b.tokens = RateBurst
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune forgets expired nonces and sources whose bucket is full again.
func (g *Guard) prune(now time.Time) {
	g.pruned = now
	for n, exp := range g.nonces {
		if now.After(exp) {
			delete(g.nonces, n)
		}
	}
	for a, b := range g.sources {
		if now.Sub(b.last).Seconds()*RatePerSecond >= RateBurst {
			delete(g.sources, a)
		}
	}
}

// Counts returns the refusal counters (index RefusedNone counts nothing).
func (g *Guard) Counts() [NumRefusals]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.counts
}
