// Package heartbeat is the cluster's L2 heartbeat protocol: the wire format
// (authenticated with HMAC-SHA256 over the cluster key), replay protection,
// and the Conn interface with two implementations: AF_PACKET on a NIC and an
// in-memory L2 network for tests.
package heartbeat

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/netip"

	"github.com/nlbproject/nlb/filter"
)

// EtherType of heartbeat frames (the same as NLB's).
const EtherType = 0x886F

// Wire constants. Message types and version are append-only.
const (
	Magic   uint32 = filter.HeartbeatMagic // "NLBH"
	Version uint8  = filter.HeartbeatVersion

	TypeHeartbeat  uint8 = 1
	TypeTableChunk uint8 = 2

	MACLen = sha256.Size // 32

	// MaxRules is the largest number of rule settings in a heartbeat.
	MaxRules = filter.MaxRules
	// ChunkLen is the number of buckets carried by one table chunk.
	ChunkLen = 1024

	headerLen        = 8
	heartbeatFixLen  = 136
	ruleSettingLen   = 4
	echoLen          = 8
	tableChunkFixLen = 40
	// MaxMessageLen bounds every message; larger input is refused. (A
	// heartbeat is at most 136+4·32+8·64+32 = 808 bytes.)
	MaxMessageLen = tableChunkFixLen + ChunkLen + MACLen
)

// Heartbeat is one host's periodic announcement. Layout (big endian; byte
// diagram in docs/protocol.md):
//
//	 0 magic u32 | 4 version u8 | 5 type u8 | 6 length u16 (whole message)
//	 8 cluster VIP [4]
//	12 host ID u8 | 13 state u8 | 14 flags u16
//	16 incarnation u64
//	24 sequence u64
//	32 host MAC [6] | 38 reserved [2]
//	40 dedicated IP [4]
//	44 config digest [16]
//	60 view u64 (bit i-1: host i heard)
//	68 epoch u64
//	76 epoch digest [16]
//	92 phase u8 | 93 rule count u8 | 94 reserved u16
//	96 retaining u64 (bit t: still holds flows in buckets it gave away in table t)
//	104 members u64 (bit i-1: host i is a member of the sender's epoch)
//	112 echo mask u64 (bit i-1: an echo of host i follows)
//	120 voters epoch u64 | 128 voters u64 (the quorum's voter set, bit i-1:
//	    host i, as agreed in that epoch; 0 0: none)
//	136 rule settings, 4 bytes each: weight u8, priority u8, flags u8, reserved u8
//	... echoes, 8 bytes each in host order: the newest incarnation of
//	    host i the sender has heard (authentic, admitted or not)
//	... HMAC-SHA256 [32] over everything before it
type Heartbeat struct {
	ClusterVIP   netip.Addr
	HostID       uint8
	State        uint8
	Flags        uint16
	Incarnation  uint64
	Seq          uint64
	MAC          [6]byte
	DedicatedIP  netip.Addr
	ConfigDigest [16]byte
	View         uint64
	Epoch        uint64
	EpochDigest  [16]byte
	Phase        uint8
	Retaining    uint64
	Members      uint64
	Rules        []RuleSetting
	// Echo[i-1] is the newest incarnation of host i the sender has heard
	// (0: none). A host admits a peer's incarnation only once that peer
	// echoes its own current incarnation: proof that the frame was made
	// after this host started, which no replay of an earlier capture can
	// give (docs/protocol.md, "Freshness").
	Echo [filter.MaxHostID]uint64
	// Voters is the sender's quorum voter set, agreed in VotersEpoch
	// (a later one supersedes it).
	VotersEpoch, Voters uint64
}

// Message is a decoded frame: a *Heartbeat or a *TableChunk (a closed set).
type Message interface {
	// From is the sender's host ID.
	From() uint8
	message()
}

func (h *Heartbeat) From() uint8  { return h.HostID }
func (*Heartbeat) message()       {}
func (c *TableChunk) From() uint8 { return c.HostID }
func (*TableChunk) message()      {}

// RuleSetting is a host's current setting for one rule, in its wire form
// (the tables use filter.RuleSetting; Flags carry disable and drain).
type RuleSetting struct {
	Weight   uint8 // 0..100
	Priority uint8 // 1..filter.MaxHostID
	Flags    uint8 // RuleDisabled, RuleDraining
}

// Rule setting flags.
const (
	RuleDisabled uint8 = 1 << 0 // operator disabled the rule on this host
	RuleDraining uint8 = 1 << 1 // no new flows; held flows continue
)

// TableChunk carries 1024 buckets of one rule's table of an epoch, sent by
// the leader to hosts that lack the table. Layout:
//
//	 0 header (as Heartbeat) | 8 cluster VIP [4] | 12 host ID u8
//	13 table u8 | 14 chunk u8 | 15 reserved u8
//	16 incarnation u64 | 24 sequence u64 | 32 epoch u64
//	40 owners [1024] | 1064 HMAC-SHA256 [32]
type TableChunk struct {
	ClusterVIP  netip.Addr
	HostID      uint8
	Table       uint8
	Chunk       uint8
	Incarnation uint64
	Seq         uint64
	Epoch       uint64
	Owners      [ChunkLen]uint8
}

// Errors returned by Unmarshal; each is a counted drop reason.
var (
	ErrShort     = fmt.Errorf("heartbeat: truncated: %w", io.ErrUnexpectedEOF)
	ErrOversized = errors.New("heartbeat: oversized")
	ErrMagic     = errors.New("heartbeat: bad magic")
	ErrVersion   = errors.New("heartbeat: unsupported version")
	ErrType      = errors.New("heartbeat: unknown message type")
	ErrLength    = errors.New("heartbeat: length field mismatch")
	ErrAuth      = errors.New("heartbeat: authentication failed")
	ErrInvalid   = errors.New("heartbeat: invalid field")
)

// Key is the heartbeat authentication key, derived from the cluster key so
// that heartbeat and remote-control MACs never share a key.
type Key [32]byte

// DeriveKey derives the heartbeat key from the cluster key.
func DeriveKey(clusterKey []byte) Key {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("nlb heartbeat v1"))
	var k Key
	copy(k[:], m.Sum(nil))
	return k
}

func putHeader(b []byte, typ uint8) {
	binary.BigEndian.PutUint32(b[0:4], Magic)
	b[4] = Version
	b[5] = typ
	binary.BigEndian.PutUint16(b[6:8], uint16(len(b)+MACLen))
}

func sign(b []byte, key *Key) []byte {
	m := hmac.New(sha256.New, key[:])
	m.Write(b)
	return m.Sum(b)
}

func putAddr(b []byte, a netip.Addr) error {
	if !a.Is4() {
		return fmt.Errorf("%w: address %v is not IPv4", ErrInvalid, a)
	}
	v := a.As4()
	copy(b, v[:])
	return nil
}

// Marshal encodes and signs a heartbeat.
func (h *Heartbeat) Marshal(key *Key) ([]byte, error) {
	if h.HostID == 0 || h.HostID > filter.MaxHostID || len(h.Rules) > MaxRules {
		return nil, fmt.Errorf("%w: host ID %d, %d rules", ErrInvalid, h.HostID, len(h.Rules))
	}
	var mask uint64
	for i, e := range h.Echo {
		if e != 0 {
			mask |= 1 << i
		}
	}
	n := heartbeatFixLen + ruleSettingLen*len(h.Rules) + echoLen*bits.OnesCount64(mask)
	b := make([]byte, n, n+MACLen)
	putHeader(b, TypeHeartbeat)
	if err := putAddr(b[8:12], h.ClusterVIP); err != nil {
		return nil, err
	}
	b[12], b[13] = h.HostID, h.State
	binary.BigEndian.PutUint16(b[14:16], h.Flags)
	binary.BigEndian.PutUint64(b[16:24], h.Incarnation)
	binary.BigEndian.PutUint64(b[24:32], h.Seq)
	copy(b[32:38], h.MAC[:])
	if err := putAddr(b[40:44], h.DedicatedIP); err != nil {
		return nil, err
	}
	copy(b[44:60], h.ConfigDigest[:])
	binary.BigEndian.PutUint64(b[60:68], h.View)
	binary.BigEndian.PutUint64(b[68:76], h.Epoch)
	copy(b[76:92], h.EpochDigest[:])
	b[92], b[93] = h.Phase, uint8(len(h.Rules))
	binary.BigEndian.PutUint64(b[96:104], h.Retaining)
	binary.BigEndian.PutUint64(b[104:112], h.Members)
	binary.BigEndian.PutUint64(b[112:120], mask)
	binary.BigEndian.PutUint64(b[120:128], h.VotersEpoch)
	binary.BigEndian.PutUint64(b[128:136], h.Voters)
	o := heartbeatFixLen
	for _, r := range h.Rules {
		b[o], b[o+1], b[o+2] = r.Weight, r.Priority, r.Flags
		o += ruleSettingLen
	}
	for _, e := range h.Echo {
		if e != 0 {
			binary.BigEndian.PutUint64(b[o:o+echoLen], e)
			o += echoLen
		}
	}
	return sign(b, key), nil
}

// Marshal encodes and signs a table chunk.
func (c *TableChunk) Marshal(key *Key) ([]byte, error) {
	if c.HostID == 0 || c.HostID > filter.MaxHostID {
		return nil, fmt.Errorf("%w: host ID %d", ErrInvalid, c.HostID)
	}
	b := make([]byte, tableChunkFixLen+ChunkLen, MaxMessageLen)
	putHeader(b, TypeTableChunk)
	if err := putAddr(b[8:12], c.ClusterVIP); err != nil {
		return nil, err
	}
	b[12], b[13], b[14] = c.HostID, c.Table, c.Chunk
	binary.BigEndian.PutUint64(b[16:24], c.Incarnation)
	binary.BigEndian.PutUint64(b[24:32], c.Seq)
	binary.BigEndian.PutUint64(b[32:40], c.Epoch)
	copy(b[40:], c.Owners[:])
	return sign(b, key), nil
}

// Unmarshal authenticates and decodes one message from a frame payload
// (which may carry Ethernet padding after the message). It returns a
// *Heartbeat or a *TableChunk; decoded values never alias b. Errors wrap
// one of the Err* reasons. The tag is checked before any field is read
// beyond the header and length.
func Unmarshal(b []byte, key *Key) (Message, error) {
	n, err := messageLen(b)
	if err != nil {
		return nil, err
	}
	if !tagValid(b[:n], key) {
		return nil, ErrAuth
	}
	return decodeBody(b, n)
}

// Decode decodes a message without authenticating it, for tools that
// show what is on the wire (nlbctl capture): never for admission.
func Decode(b []byte) (Message, error) {
	n, err := messageLen(b)
	if err != nil {
		return nil, err
	}
	return decodeBody(b, n)
}

// Authentic reports whether message b (header, length and tag) verifies
// under one of keys.
func Authentic(b []byte, keys Keyring) bool {
	n, err := messageLen(b)
	if err != nil {
		return false
	}
	for i := range keys {
		if tagValid(b[:n], &keys[i]) {
			return true
		}
	}
	return false
}

func tagValid(msg []byte, key *Key) bool {
	body, mac := msg[:len(msg)-MACLen], msg[len(msg)-MACLen:]
	m := hmac.New(sha256.New, key[:])
	m.Write(body)
	return hmac.Equal(m.Sum(nil), mac)
}

// messageLen checks the header and the length a message must have, and
// returns it.
func messageLen(b []byte) (int, error) {
	if len(b) < headerLen {
		return 0, fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if binary.BigEndian.Uint32(b[0:4]) != Magic {
		return 0, ErrMagic
	}
	if b[4] != Version {
		return 0, fmt.Errorf("%w %d", ErrVersion, b[4])
	}
	n := int(binary.BigEndian.Uint16(b[6:8]))
	if n > MaxMessageLen {
		return 0, fmt.Errorf("%w: length %d", ErrOversized, n)
	}
	if len(b) < n {
		return 0, fmt.Errorf("%w: %d of %d bytes", ErrShort, len(b), n)
	}
	typ := b[5]
	var want int
	switch typ {
	case TypeHeartbeat:
		if n < heartbeatFixLen+MACLen {
			return 0, fmt.Errorf("%w: heartbeat of %d bytes", ErrLength, n)
		}
		want = heartbeatFixLen + ruleSettingLen*int(b[93]) + echoLen*bits.OnesCount64(binary.BigEndian.Uint64(b[112:120])) + MACLen
	case TypeTableChunk:
		want = MaxMessageLen
	default:
		return 0, fmt.Errorf("%w %d", ErrType, typ)
	}
	if n != want {
		return 0, fmt.Errorf("%w: %d bytes, want %d", ErrLength, n, want)
	}
	return n, nil
}

// decodeBody decodes a message of length n that messageLen accepted.
func decodeBody(b []byte, n int) (Message, error) {
	if b[5] == TypeTableChunk {
		c := &TableChunk{
			ClusterVIP:  netip.AddrFrom4([4]byte(b[8:12])),
			HostID:      b[12],
			Table:       b[13],
			Chunk:       b[14],
			Incarnation: binary.BigEndian.Uint64(b[16:24]),
			Seq:         binary.BigEndian.Uint64(b[24:32]),
			Epoch:       binary.BigEndian.Uint64(b[32:40]),
		}
		copy(c.Owners[:], b[40:40+ChunkLen])
		if c.HostID == 0 || c.HostID > filter.MaxHostID {
			return nil, fmt.Errorf("%w: host ID %d", ErrInvalid, c.HostID)
		}
		return c, nil
	}
	h := &Heartbeat{
		ClusterVIP:  netip.AddrFrom4([4]byte(b[8:12])),
		HostID:      b[12],
		State:       b[13],
		Flags:       binary.BigEndian.Uint16(b[14:16]),
		Incarnation: binary.BigEndian.Uint64(b[16:24]),
		Seq:         binary.BigEndian.Uint64(b[24:32]),
		MAC:         [6]byte(b[32:38]),
		DedicatedIP: netip.AddrFrom4([4]byte(b[40:44])),
		View:        binary.BigEndian.Uint64(b[60:68]),
		Epoch:       binary.BigEndian.Uint64(b[68:76]),
		Phase:       b[92],
		Retaining:   binary.BigEndian.Uint64(b[96:104]),
		Members:     binary.BigEndian.Uint64(b[104:112]),
		VotersEpoch: binary.BigEndian.Uint64(b[120:128]),
		Voters:      binary.BigEndian.Uint64(b[128:136]),
	}
	copy(h.ConfigDigest[:], b[44:60])
	copy(h.EpochDigest[:], b[76:92])
	o := heartbeatFixLen
	if nr := int(b[93]); nr > 0 {
		h.Rules = make([]RuleSetting, nr)
		for i := range h.Rules {
			h.Rules[i] = RuleSetting{Weight: b[o], Priority: b[o+1], Flags: b[o+2]}
			o += ruleSettingLen
		}
	}
	for mask := binary.BigEndian.Uint64(b[112:120]); mask != 0; mask &= mask - 1 {
		h.Echo[bits.TrailingZeros64(mask)] = binary.BigEndian.Uint64(b[o : o+echoLen])
		o += echoLen
	}
	if h.HostID == 0 || h.HostID > filter.MaxHostID || len(h.Rules) > MaxRules {
		return nil, fmt.Errorf("%w: host ID %d, %d rules", ErrInvalid, h.HostID, len(h.Rules))
	}
	return h, nil
}

// Marshal encodes and signs a *Heartbeat or a *TableChunk.
func Marshal(msg Message, key *Key) ([]byte, error) {
	switch m := msg.(type) {
	case *Heartbeat:
		return m.Marshal(key)
	case *TableChunk:
		return m.Marshal(key)
	}
	return nil, fmt.Errorf("%w: cannot marshal %T", ErrInvalid, msg)
}
