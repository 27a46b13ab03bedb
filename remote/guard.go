package remote

import (
	"crypto/hmac"
	"net/netip"
	"sync"
	"time"
)

// Refusal is why a datagram was not executed. Values are append-only.
type Refusal uint8

const (
	RefusedNone        Refusal = iota
	RefusedMalformed           // short, oversized, bad magic, version, kind or length
	RefusedAuth                // the tag does not verify with any key of its role
	RefusedStale               // timestamp outside MaxSkew of our clock, or before the agent started
	RefusedReplay              // nonce already seen within the window
	RefusedRateLimit           // the (authenticated) source sent too many requests
	RefusedNotRequest          // a reply (or anything but a request) sent to the server
	RefusedUnknown             // authentic, but the command is unknown
	RefusedCacheFull           // too many nonces live to remember one more
	RefusedMisdirected         // authentic, but sent to another address or host
	RefusedForbidden           // authentic under the monitor key, but the command changes the cluster
	numRefusals
)

// NumRefusals is the number of Refusal values.
const NumRefusals = int(numRefusals)

var refusalNames = [numRefusals]string{"none", "malformed", "bad-auth", "stale", "replay",
	"rate-limited", "not-request", "unknown-command", "replay-cache-full", "misdirected", "forbidden"}

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
	// so filling it needs a key.
	MaxNonces = 65536
	// RatePerSecond and RateBurst are each authenticated source's token
	// bucket.
	RatePerSecond = 20
	RateBurst     = 40
	// maxSources bounds the rate limiter's table. Only sources of
	// authentic requests enter it: spoofed datagrams keep no state.
	maxSources = 4096
)

// Keyring holds the keys a role's requests may be signed with: the
// current one first, then the next one during a key rotation.
type Keyring []Key

// Keys are the remote-control keyrings of both roles.
type Keys struct {
	Admin, Monitor Keyring
}

// For returns the keyring of role r (nil for an unknown role).
func (k *Keys) For(r Role) Keyring {
	switch r {
	case RoleAdmin:
		return k.Admin
	case RoleMonitor:
		return k.Monitor
	}
	return nil
}

// Local is where a host receives requests: its addresses (VIPs and its
// dedicated IP) and its host ID.
type Local struct {
	Addrs  []netip.Addr
	HostID uint8
}

// Guard decides, before anything is executed, whether a request may run
// here: cheap checks first, then the tag (no state is kept for a datagram
// whose tag does not verify), then its destination, freshness, replay,
// rate and role. It counts every refusal, and bounds the answers to
// refusals (replyBudget) so that replayed requests cannot make a host
// send without limit.
type Guard struct {
	mu      sync.Mutex
	keys    Keys
	local   Local
	since   time.Time              // requests stamped earlier are stale (agent start)
	nonces  map[[16]byte]time.Time // nonce -> when it may be forgotten
	sources map[netip.Addr]*bucket
	counts  [numRefusals]uint64
	pruned  time.Time
	replies bucket // refusal answers, all sources together
}

// Refusal answers: at most this many per second over all sources, with
// this burst; beyond it a refusal is silent.
const (
	refusalRepliesPerSecond = 10
	refusalReplyBurst       = 20
)

// AnswerRefusal takes a token for one refusal answer; false: stay silent.
func (g *Guard) AnswerRefusal(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	b := &g.replies
	if b.last.IsZero() {
		b.tokens = refusalReplyBurst
	}
	b.tokens = min(b.tokens+now.Sub(b.last).Seconds()*refusalRepliesPerSecond, refusalReplyBurst)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewGuard returns a guard for these keys and this host; requests stamped
// before since (the agent's start) are refused as stale, so a request
// captured before a restart cannot run again after it.
func NewGuard(keys Keys, local Local, since time.Time) *Guard {
	return &Guard{keys: keys, local: local, since: since, nonces: map[[16]byte]time.Time{}, sources: map[netip.Addr]*bucket{}}
}

// SetKeys replaces the keyrings (a reload during a key rotation).
func (g *Guard) SetKeys(keys Keys) {
	g.mu.Lock()
	g.keys = keys
	g.mu.Unlock()
}

// Check vets one datagram from src, received on address dst at now. It
// returns the request when it may be executed; otherwise the refusal
// (counted) and, for a refusal that deserves an answer (authentic but
// stale, replayed or forbidden), the request and the key to tag the
// answer with.
func (g *Guard) Check(b []byte, dst, src netip.Addr, now time.Time) (*Message, *Key, Refusal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.pruned) > time.Second {
		g.prune(now)
	}
	m, err := Unmarshal(b, nil) // header and lengths only: no tag yet
	if err != nil {
		return g.refuse(nil, nil, RefusedMalformed)
	}
	if m.Kind != KindRequest {
		return g.refuse(nil, nil, RefusedNotRequest)
	}
	key := g.verify(b, m.Role)
	if key == nil {
		return g.refuse(nil, nil, RefusedAuth)
	}
	if !SameDest(m.Dest, dst) || !g.isLocal(dst) || m.Host != 0 && m.Host != g.local.HostID {
		// Meant for another host, or sent there and replayed here: the
		// intended host answers, not this one.
		return g.refuse(nil, nil, RefusedMisdirected)
	}
	ts := time.Unix(0, m.Timestamp)
	if d := now.Sub(ts); d > MaxSkew || d < -MaxSkew || ts.Before(g.since) {
		return g.refuse(m, key, RefusedStale)
	}
	if _, seen := g.nonces[m.Nonce]; seen {
		return g.refuse(m, key, RefusedReplay)
	}
	// Only a fresh request never seen reaches the rate limiter: making
	// one needs a key, so replays from spoofed sources cannot fill its
	// table and lock an operator out.
	if !g.allow(src, now) {
		return g.refuse(nil, nil, RefusedRateLimit)
	}
	if len(g.nonces) >= MaxNonces {
		return g.refuse(nil, nil, RefusedCacheFull)
	}
	// Kept until its timestamp is stale anyway: a request stamped up to
	// MaxSkew ahead of our clock stays fresh for 2 × MaxSkew from now.
	g.nonces[m.Nonce] = now.Add(2 * MaxSkew)
	if !m.Command.Valid() {
		return g.refuse(m, key, RefusedUnknown)
	}
	if !m.Role.Allows(m.Command) {
		return g.refuse(m, key, RefusedForbidden)
	}
	return m, key, RefusedNone
}

// verify returns the key of role's keyring whose tag b carries, or nil.
func (g *Guard) verify(b []byte, role Role) *Key {
	n := len(b) - MACLen
	for i, k := range g.keys.For(role) {
		if hmac.Equal(tag(&k, b[:n]), b[n:]) {
			return &g.keys.For(role)[i]
		}
	}
	return nil
}

func (g *Guard) isLocal(a netip.Addr) bool {
	for _, l := range g.local.Addrs {
		if l == a {
			return true
		}
	}
	return false
}

func (g *Guard) refuse(m *Message, key *Key, r Refusal) (*Message, *Key, Refusal) {
	g.counts[r]++
	return m, key, r
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
