package convergence

import (
	"fmt"
	"math/bits"
	"time"

	"github.com/nlbproject/nlb/heartbeat"
)

// MaxHoldDown caps the flap-damping hold-down.
const MaxHoldDown = 30 * time.Second

// holdDown is how long peer p must be heard without a break before it is
// a member again.
func (m *Machine) holdDown(p *peer) time.Duration {
	if m.cfg.FlapWindow == 0 || p.evictions < 2 {
		return 0
	}
	d := m.cfg.DeadAfter() << min(p.evictions-2, 16)
	return min(d, MaxHoldDown)
}

type peer struct {
	// hb is the newest admitted heartbeat, heard at lastHeard.
	hb        *heartbeat.Heartbeat
	lastHeard time.Time
	// last is the newest authentic heartbeat, admitted or not, heard at
	// lastAt; inc is the newest incarnation heard (what we echo), and
	// verified the incarnation that echoed ours (docs/protocol.md,
	// "Freshness").
	last     *heartbeat.Heartbeat
	lastAt   time.Time
	inc      uint64
	verified uint64
	refused  string
	reported bool
	// Flap damping: when it was last heard again after a silence, and
	// its evictions within FlapWindow of each other.
	heardSince time.Time
	evictions  int
	lastEvict  time.Time
	// live: alive at the last tick (an eviction is the tick it is not).
	live bool
}

// Heard returns, as a bitmap (bit i-1 = host i), this host and the peers
// heard within DeadAfter that are not refused, whatever their state.
func (m *Machine) Heard(now time.Time) uint64 {
	v := uint64(1) << (m.cfg.HostID - 1)
	for id, p := range m.peers {
		if m.alive(now, p) {
			v |= 1 << (id - 1)
		}
	}
	return v
}

// Silent returns, for each admitted peer that went quiet while taking
// part (its last heartbeat said converging, converged or draining), how
// long ago it was last heard, once that exceeds two periods. Such a
// peer's agent may be dead with its data plane still filtering: after
// LeaseFor its lease has run out, after DeadAfter it is evicted.
func (m *Machine) Silent(now time.Time) map[uint8]time.Duration {
	var out map[uint8]time.Duration
	for id, p := range m.peers {
		if p.hb == nil || p.refused != "" || !State(p.hb.State).Active() {
			continue
		}
		if d := now.Sub(p.lastHeard); d > 2*m.cfg.Period {
			if out == nil {
				out = map[uint8]time.Duration{}
			}
			out[id] = d
		}
	}
	return out
}

func (m *Machine) alive(now time.Time, p *peer) bool {
	return p.refused == "" && p.hb != nil && now.Sub(p.lastHeard) < m.deadAfter(now)
}

// deadAfter is how long a silent peer stays alive in the view: DeadAfter,
// doubled while this host's own receive path has lost frames within the
// last DeadAfter. As memberlist's Lifeguard reasons, a host that cannot
// trust its own hearing (a flood filling its socket, a saturated core)
// should not declare others dead on that evidence alone; the delay only
// postpones taking a dead peer's buckets (its lease has run out anyway).
func (m *Machine) deadAfter(now time.Time) time.Duration {
	if now.Before(m.lossUntil) {
		return 2 * m.cfg.DeadAfter()
	}
	return m.cfg.DeadAfter()
}

// view returns the hosts heard and admitted that take part (plus us when
// we do), as a bitmap.
func (m *Machine) view(now time.Time) uint64 {
	var v uint64
	if m.state.Active() {
		v |= 1 << (m.cfg.HostID - 1)
	}
	for id, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).Active() && now.Sub(p.heardSince) >= m.holdDown(p) {
			v |= 1 << (id - 1)
		}
	}
	return v
}

func lowest(v uint64) uint8 {
	if v == 0 {
		return 0
	}
	return uint8(bits.TrailingZeros64(v) + 1)
}

func (m *Machine) receive(now time.Time, r Received) []Action {
	switch msg := r.Msg.(type) {
	case *heartbeat.Heartbeat:
		if r.SelfID || msg.HostID == m.cfg.HostID {
			// A frame with our ID proves nothing (anyone can replay one
			// of our earlier life's, with a higher number if the clock
			// stepped back since) and is ignored. Another host with our
			// ID shows in our peers' frames: their views and echoes
			// (idHeldElsewhere before we speak, heldNewer after).
			return nil
		}
		p := m.peers[msg.HostID]
		if p == nil {
			p = &peer{}
			m.peers[msg.HostID] = p
		}
		p.inc = max(p.inc, msg.Incarnation)
		p.last, p.lastAt = msg, now
		m.learnIncarnation(now, msg)
		if msg.Echo[m.cfg.HostID-1] == m.cfg.Incarnation {
			p.verified = msg.Incarnation
		}
		if p.verified != msg.Incarnation {
			// Authentic, but not shown to be made after we started: a
			// peer that has not heard this incarnation of ours yet, or a
			// replay of a capture (a departed host's frames, after our
			// restart emptied our replay state). Heard (we echo it, so
			// a live peer is admitted one frame later), not admitted.
			m.unverified++
			return nil
		}
		if m.heldNewer(msg) {
			m.refuseDuplicate(now)
			return nil
		}
		if msg.ConfigDigest != m.cfg.ConfigDigest {
			if !p.reported {
				m.events = append(m.events, Notice{Kind: NoticeRefused, Host: msg.HostID, Msg: "cluster settings or port rules differ"})
				p.reported = true
			}
			p.refused = "config mismatch"
			p.hb, p.lastHeard = msg, now
			return nil
		}
		if p.refused != "" || p.hb == nil || !m.alive(now, p) {
			p.heardSince = now
			if p.hb != nil && msg.Incarnation > p.hb.Incarnation {
				p.evictions = 0 // a restarted agent, not a flapping link
			}
			if hd := m.holdDown(p); hd > 0 {
				m.events = append(m.events, Notice{Kind: NoticeDamped, Host: msg.HostID,
					Msg: fmt.Sprintf("flapping (%d evictions): a member again after %v of steady heartbeats", p.evictions, hd)})
			} else {
				m.events = append(m.events, Notice{Kind: NoticeJoin, Host: msg.HostID, Msg: "heard"})
			}
		} else if was, is := State(p.hb.State), State(msg.State); was.Active() && !is.Active() {
			m.events = append(m.events, Notice{Kind: NoticeLeave, Host: msg.HostID, Msg: is.String()})
		}
		if msg.VotersEpoch > m.votersEpoch {
			m.setVoters(msg.VotersEpoch, msg.Voters) // agreed since by a quorum we missed
		}
		p.refused, p.reported = "", false
		p.hb, p.lastHeard = msg, now
		if msg.Epoch > m.maxSeen {
			m.maxSeen = msg.Epoch
		}
	case *heartbeat.TableChunk:
		m.receiveChunk(now, msg)
	}
	return nil
}

// leader is the lowest host ID among the hosts we hear and the hosts they
// hear (their views). Counting what peers hear keeps a host whose link
// from the leader fails one way from leading a second cluster of its own
// and outbidding the real leader's epochs forever.
func (m *Machine) leader(now time.Time) uint8 {
	v := m.view(now)
	for _, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).Active() {
			v |= p.hb.View
		}
	}
	return lowest(v)
}

// guide is the host whose epoch we follow and whose table chunks we
// accept: the leader if we hear it, else the lowest host we hear that
// hears the leader (it relays the leader's epoch and tables). A leader
// without an epoch is guided by the source.
func (m *Machine) guide(now time.Time, leader uint8) uint8 {
	if leader == m.cfg.HostID {
		return m.source(now)
	}
	if p := m.peers[leader]; p != nil && m.alive(now, p) {
		return leader
	}
	best := uint8(0)
	for id, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).Active() && p.hb.View&(1<<(leader-1)) != 0 && p.hb.Epoch != 0 && (best == 0 || id < best) {
			best = id
		}
	}
	return best
}

// source is the lowest peer we hear that has an epoch: the host whose
// tables we take. It is the leader, except while the leader itself has
// none (it restarted, or joined with the lowest ID): then the leader too
// adopts the source's tables before it proposes anything.
func (m *Machine) source(now time.Time) uint8 {
	best := uint8(0)
	for id, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).Active() && p.hb.Epoch != 0 && (best == 0 || id < best) {
			best = id
		}
	}
	return best
}

// quorumHorizon: a voter counts towards the quorum if heard this
// recently: three periods less than DeadAfter, so a host that loses the
// quorum in a partition stops (and expires its lease) before the other side
// can declare it dead.
func (m *Machine) quorumHorizon() time.Duration {
	h := m.cfg.DeadAfter() - 3*m.cfg.Period
	if h < m.cfg.Period {
		h = m.cfg.Period
	}
	return h
}

// quorum: off, or we hear, and are heard by, a majority of the voters
// (ourselves included when we are one): with the static voters 1..N more
// than half; with the dynamic ones (the last agreed members) more than
// half, or exactly half with the lowest voter among them, so that one side
// of an even split goes on (a two-host cluster survives the loss of its
// higher host). No voters yet (a host that never agreed to an epoch): true.
func (m *Machine) quorum(now time.Time) bool {
	if !m.cfg.Quorum {
		return true
	}
	voters, tie := m.voters, true
	if n := m.cfg.QuorumVoters; n > 0 {
		voters, tie = ^uint64(0)>>(64-n), false
	}
	if voters == 0 {
		return true
	}
	heard := uint64(1) << (m.cfg.HostID - 1)
	me := heard
	for id, p := range m.peers {
		// Whatever its state: a stopped voter we hear, and that hears
		// us, is on our side of any partition (so an operator's stop of
		// one host of two does not stop the other).
		// A peer counts only with the same voter set: one that still
		// holds an older set (it missed an epoch agreed without it)
		// must not lend its vote to a count over that older set.
		if p.refused == "" && p.hb != nil && now.Sub(p.lastHeard) < m.quorumHorizon() && p.hb.View&me != 0 &&
			(!tie || p.hb.Voters == voters) {
			heard |= 1 << (id - 1)
		}
	}
	votes, n := bits.OnesCount64(heard&voters), bits.OnesCount64(voters)
	return 2*votes > n || tie && 2*votes == n && heard&voters&-voters != 0
}

// setVoters records the dynamic voter set agreed in epoch num, if newer
// than ours (with a quorum of the members last agreed).
func (m *Machine) setVoters(num, voters uint64) {
	if !m.cfg.Quorum || m.cfg.QuorumVoters != 0 || num <= m.votersEpoch || voters == 0 {
		return
	}
	m.votersEpoch = num
	if voters != m.voters {
		m.voters = voters
		m.out = append(m.out, Voters{Epoch: num, Set: voters})
	}
}

// conflict: a host we hear has an epoch with our number (or a higher one)
// but other contents. Two sides of a partition numbered their epochs
// independently; a fresh epoch above both settles it.
func (m *Machine) conflict(now time.Time) bool {
	for _, p := range m.peers {
		if m.alive(now, p) && State(p.hb.State).Active() && p.hb.Epoch >= m.epoch.Num && p.hb.EpochDigest != m.epoch.Digest {
			return true
		}
	}
	return false
}

// mismatched: an active host with other cluster settings is heard.
func (m *Machine) mismatched(now time.Time) bool {
	for _, p := range m.peers {
		if p.refused != "" && p.hb != nil && now.Sub(p.lastHeard) < m.cfg.DeadAfter() && State(p.hb.State).Active() {
			return true
		}
	}
	return false
}

// Admitted reports whether host id's heartbeats of incarnation inc are
// admitted: authentic frames of that incarnation that echoed ours (not a
// replay, nor a peer that has not heard us yet). The agent binds the
// Ethernet source of admitted frames in the data plane.
func (m *Machine) Admitted(id uint8, inc uint64) bool {
	p := m.peers[id]
	return id != m.cfg.HostID && p != nil && inc != 0 && p.verified == inc
}
