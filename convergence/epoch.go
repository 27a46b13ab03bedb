package convergence

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

// Epoch is an agreed configuration of the cluster: members, their
// settings, and the tables computed from them.
type Epoch struct {
	Num      uint64
	Members  uint64 // bit i-1 = host i
	Settings map[uint8][]filter.RuleSetting
	Tables   Tables
	Digest   [16]byte
}

func digestTables(num, members uint64, t *Tables, ntables int) [16]byte {
	h := sha256.New()
	var b [16]byte
	binary.BigEndian.PutUint64(b[0:8], num)
	binary.BigEndian.PutUint64(b[8:16], members)
	h.Write(b[:])
	var zero filter.Table
	for i := 0; i < ntables; i++ {
		tab := t[tableIndex(i, ntables)]
		if tab == nil {
			tab = &zero
		}
		h.Write(tab[:])
	}
	var d [16]byte
	copy(d[:], h.Sum(nil))
	return d
}

// tableIndex maps the i-th transmitted table to its index: rules first,
// then the default table last.
func tableIndex(i, ntables int) int {
	if i == ntables-1 {
		return filter.DefaultRule
	}
	return i
}

type assembly struct {
	num    uint64
	tables Tables
	got    map[[2]uint8]bool
}

// Epoch returns the agreed epoch, or nil.
func (m *Machine) Epoch() *Epoch { return m.epoch }

func (m *Machine) receiveChunk(now time.Time, c *heartbeat.TableChunk) {
	if c.HostID != m.guide(now, m.leader(now)) || int(c.Table) >= m.ntables() || int(c.Chunk) >= filter.Buckets/heartbeat.ChunkLen {
		return
	}
	if src := m.peers[c.HostID]; m.epoch != nil && m.epoch.Num == c.Epoch && src != nil && src.hb.EpochDigest == m.epoch.Digest {
		return
	}
	if m.asm == nil || m.asm.num != c.Epoch {
		m.asm = &assembly{num: c.Epoch, got: map[[2]uint8]bool{}}
	}
	t := tableIndex(int(c.Table), m.ntables())
	if m.asm.tables[t] == nil {
		m.asm.tables[t] = new(filter.Table)
	}
	copy(m.asm.tables[t][int(c.Chunk)*heartbeat.ChunkLen:], c.Owners[:])
	m.asm.got[[2]uint8{c.Table, c.Chunk}] = true
}

// effective returns this host's advertised settings: configured ones,
// with operator overrides and drainstop applied.
func (m *Machine) effective() []heartbeat.RuleSetting {
	out := make([]heartbeat.RuleSetting, len(m.cfg.Settings))
	for i, s := range m.cfg.Settings {
		w := uint8(s.Weight)
		f := m.ruleFlags[i]
		if f == 0 && m.healthDown[i] {
			f = heartbeat.RuleDraining
		}
		if f != 0 || m.state == StateDraining {
			w = 0
			if m.state == StateDraining {
				f |= heartbeat.RuleDraining
			}
		}
		out[i] = heartbeat.RuleSetting{Weight: w, Priority: uint8(s.Priority), Flags: f}
	}
	return out
}

// ToSettings converts heartbeat rule settings to the tables' (a disabled
// or draining rule has no handling priority), for n rules.
func ToSettings(rs []heartbeat.RuleSetting, n int) []filter.RuleSetting {
	out := make([]filter.RuleSetting, n)
	for i := range out {
		if i < len(rs) {
			out[i] = filter.RuleSetting{Weight: uint32(rs[i].Weight), Priority: int(rs[i].Priority)}
			if rs[i].Flags != 0 {
				out[i].Priority = 0 // out of single-host selection
			}
		}
	}
	return out
}

func (m *Machine) chunks() []Action {
	var out []Action
	n := m.ntables()
	var zero filter.Table
	for i := 0; i < n; i++ {
		tab := m.epoch.Tables[tableIndex(i, n)]
		if tab == nil {
			tab = &zero
		}
		for c := 0; c < filter.Buckets/heartbeat.ChunkLen; c++ {
			m.seq++
			ch := &heartbeat.TableChunk{ClusterVIP: m.cfg.ClusterVIP, HostID: m.cfg.HostID,
				Table: uint8(i), Chunk: uint8(c), Incarnation: m.cfg.Incarnation, Seq: m.seq, Epoch: m.epoch.Num}
			copy(ch.Owners[:], tab[c*heartbeat.ChunkLen:])
			out = append(out, Send{Msg: ch})
		}
	}
	return out
}

// lead proposes a new epoch when the membership or settings changed.
func (m *Machine) lead(now time.Time, view uint64) {
	settings := map[uint8][]filter.RuleSetting{m.cfg.HostID: ToSettings(m.effective(), len(m.cfg.Rules))}
	for id, p := range m.peers {
		if view&(1<<(id-1)) != 0 {
			settings[id] = ToSettings(p.hb.Rules, len(m.cfg.Rules))
		}
	}
	if m.epoch != nil && m.epoch.Members == view && sameSettings(m.epoch.Settings, settings) && !m.conflict(now) {
		return
	}
	var prev *Tables
	if m.epoch != nil {
		prev = &m.epoch.Tables
	} else {
		// Founding a cluster from nothing: another host may be founding
		// one at this instant, unheard because listeners are silent. Open
		// nothing for DeadAfter while we announce ourselves; if one
		// exists, we hear it, and the lower ID proposes for both.
		m.holdUntil = now.Add(m.cfg.DeadAfter())
	}
	num := max(m.maxSeen, m.votersEpoch) + 1 // above the recorded voters' epoch, after a cold start
	if m.epoch != nil && m.epoch.Num >= num {
		num = m.epoch.Num + 1
	}
	e := &Epoch{Num: num, Members: view, Settings: settings, Tables: *ComputeTables(m.cfg.Rules, settings, prev)}
	// The default host is the lowest member that is not draining.
	def := uint8(0)
	for id := uint8(1); id <= filter.MaxHostID; id++ {
		if view&(1<<(id-1)) == 0 {
			continue
		}
		draining := id == m.cfg.HostID && m.state == StateDraining
		if p := m.peers[id]; id != m.cfg.HostID && p != nil && State(p.hb.State) == StateDraining {
			draining = true
		}
		if def == 0 || !draining && def != 0 && m.isDraining(def) {
			def = id
		}
	}
	e.Tables[filter.DefaultRule] = filter.Uniform(def)
	e.Digest = digestTables(e.Num, e.Members, &e.Tables, m.ntables())
	m.events = append(m.events, Notice{Kind: NoticeEpoch, Host: m.cfg.HostID, Msg: "proposed " + describeEpoch(e)})
	m.adopt(now, e)
}

func sameSettings(a, b map[uint8][]filter.RuleSetting) bool {
	if len(a) != len(b) {
		return false
	}
	for id, x := range a {
		y, ok := b[id]
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
	}
	return true
}

// follow adopts the leader's epoch once its tables are complete and match
// its digest.
func (m *Machine) follow(now time.Time, lhb *heartbeat.Heartbeat) {
	if lhb.Epoch == 0 || m.epoch != nil && m.epoch.Num == lhb.Epoch && m.epoch.Digest == lhb.EpochDigest {
		return
	}
	if lhb.Members&(1<<(m.cfg.HostID-1)) == 0 {
		// The cluster's epoch does not have us: we own nothing in it.
		// Close at once, without waiting for its tables.
		m.closeAll(false)
	}
	if m.asm == nil || m.asm.num != lhb.Epoch || len(m.asm.got) < m.ntables()*filter.Buckets/heartbeat.ChunkLen {
		return
	}
	e := &Epoch{Num: lhb.Epoch, Members: lhb.Members, Tables: m.asm.tables}
	if digestTables(e.Num, e.Members, &e.Tables, m.ntables()) != lhb.EpochDigest {
		m.asm = nil // inconsistent chunks (e.g. from two epochs): start over
		return
	}
	e.Digest = lhb.EpochDigest
	if why := m.verifyTables(e); why != "" {
		// Keep the chunks: what this host knows of the members' settings
		// may be behind, and the next evaluation checks again.
		if m.refusedEpoch != e.Num {
			m.refusedEpoch = e.Num
			m.events = append(m.events, Notice{Kind: NoticeTablesRefused, Host: lhb.HostID,
				Msg: fmt.Sprintf("epoch %d refused: %s", e.Num, why)})
		}
		return
	}
	m.adopt(now, e)
}

// adopt makes e the agreed epoch and closes every open bucket it does not
// give us: phase one of the handoff.
func (m *Machine) adopt(now time.Time, e *Epoch) {
	if e.Num > m.maxSeen {
		m.maxSeen = e.Num
	}
	m.asm = nil
	// Hosts that were not in our previous epoch (joiners, or the other
	// side of a healed partition, which may have served our buckets) may
	// hold flows in the buckets we keep: those go back to dirty until
	// nobody reports retained flows.
	var prevMembers uint64
	if m.epoch != nil {
		prevMembers = m.epoch.Members
	}
	newcomers := e.Members &^ prevMembers &^ (1 << (m.cfg.HostID - 1))
	for _, t := range m.tables() {
		tab := e.Tables[t]
		for b := range m.marks[t] {
			k := m.marks[t][b]
			switch {
			case (k == filter.MarkOwned || k == filter.MarkDirty) && (tab == nil || tab[b] != m.cfg.HostID):
				m.setMark(t, b, filter.MarkRetained)
			case k == filter.MarkOwned && newcomers != 0:
				m.setMark(t, b, filter.MarkDirty)
			}
		}
	}
	m.epoch = e
	m.phase = phaseClosed
	if e.Members != 0 {
		m.setVoters(e.Num, e.Members)
	}
	m.events = append(m.events, Notice{Kind: NoticeEpoch, Host: m.cfg.HostID, Msg: "adopted " + describeEpoch(e)})
	m.checkPriorities(e.Members)
}

// checkPriorities reports, once per change, single-host rules whose
// handling priority two live members share (the lower ID takes them).
func (m *Machine) checkPriorities(members uint64) {
	settings, _ := m.memberSettings(members)
	pc := PriorityConflicts(m.cfg.Rules, settings)
	if slices.EqualFunc(pc, m.priorityConflicts, func(a, b PriorityConflict) bool {
		return a.Rule == b.Rule && a.Priority == b.Priority && slices.Equal(a.Hosts, b.Hosts)
	}) {
		return
	}
	m.priorityConflicts = pc
	for _, c := range pc {
		m.events = append(m.events, Notice{Kind: NoticePriorityConflict, Host: c.Hosts[0],
			Msg: fmt.Sprintf("rule %d (%s): hosts %v share handling priority %d; host %d takes it (priorities must be unique)",
				c.Rule, m.cfg.Rules[c.Rule], c.Hosts, c.Priority, c.Hosts[0])})
	}
}

// PriorityConflicts are the conflicts in the epoch this host adopted last.
func (m *Machine) PriorityConflicts() []PriorityConflict { return slices.Clone(m.priorityConflicts) }

// describeEpoch is an epoch in words for notices: "epoch 9, members 1,2,3".
func describeEpoch(e *Epoch) string {
	var ids []string
	for v := e.Members; v != 0; v &= v - 1 {
		ids = append(ids, strconv.Itoa(bits.TrailingZeros64(v)+1))
	}
	if ids == nil {
		ids = []string{"none"}
	}
	return fmt.Sprintf("epoch %d, members %s", e.Num, strings.Join(ids, ","))
}
