// Package remote is nlb's remote control: the wire format of requests and
// replies on UDP 2504, their authentication and replay protection, a server
// that dispatches to a Handler, and the client nlbctl uses.
package remote

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// DefaultPort is the remote-control UDP port (NLB's).
const DefaultPort = 2504

// Wire constants.
const (
	Magic   = "NLBR"
	Version = 2
	// HeaderLen is the fixed header before the body.
	HeaderLen = 48
	// MACLen is the HMAC-SHA256 tag after the body.
	MACLen = 32
	// MaxRequestBody and MaxReplyBody bound the JSON bodies; a datagram
	// larger than its kind allows is refused before any parsing.
	MaxRequestBody = 1024
	MaxReplyBody   = 16 * 1024
	// MaxDatagram is the largest datagram either side reads.
	MaxDatagram = HeaderLen + MaxReplyBody + MACLen
)

// Kind tells requests from replies. Values are append-only.
type Kind uint8

const (
	KindRequest Kind = 1
	KindReply   Kind = 2
)

// Command is a remote-control command. Values are append-only: they are on
// the wire.
type Command uint8

const (
	CmdQuery Command = iota + 1
	CmdStart
	CmdStop
	CmdDrainStop
	CmdSuspend
	CmdResume
	CmdEnable
	CmdDisable
	CmdDrain
	CmdParams
	CmdReload
	CmdIP2MAC
	CmdFilter
	// CmdEvents reads the host's event history (EventsResult).
	CmdEvents
	// CmdPorts reads per-rule state, counters and bucket owners
	// (PortsResult): queryport, display and the web view.
	CmdPorts
	numCommands
)

var commandNames = [numCommands]string{"", "query", "start", "stop", "drainstop", "suspend",
	"resume", "enable", "disable", "drain", "params", "reload", "ip2mac", "filter", "events", "ports"}

func (c Command) String() string {
	if c > 0 && c < numCommands {
		return commandNames[c]
	}
	return fmt.Sprintf("command(%d)", uint8(c))
}

// Valid reports whether c is a known command.
func (c Command) Valid() bool { return c > 0 && c < numCommands }

// ParseCommand returns the command named s.
func ParseCommand(s string) (Command, error) {
	for i, n := range commandNames {
		if i > 0 && n == s {
			return Command(i), nil
		}
	}
	return 0, fmt.Errorf("unknown command %q", s)
}

// Changes reports whether c changes the cluster (as opposed to reading).
func (c Command) Changes() bool {
	switch c {
	case CmdQuery, CmdParams, CmdIP2MAC, CmdFilter, CmdEvents, CmdPorts:
		return false
	}
	return true
}

// Status is a reply's outcome. Values are append-only.
type Status uint8

const (
	StatusOK Status = iota
	// StatusFailed: the host ran the command and it failed (the body's
	// error says why), or the command is unknown or its arguments bad.
	StatusFailed
	// StatusRefused is no longer sent (protocol 1 sent it, untagged, for
	// any refusal); kept so that values stay stable.
	StatusRefused
	// StatusStale: authentic, but the timestamp is more than MaxSkew from
	// the host's clock, or older than the agent's start (a replay across a
	// restart). The reply is tagged and has no body.
	StatusStale
	// StatusReplay: authentic, but its nonce was seen already.
	StatusReplay
	// StatusForbidden: authentic under the monitor key, but the command
	// changes the cluster.
	StatusForbidden
	numStatuses
)

var statusNames = [numStatuses]string{"ok", "failed", "refused", "stale", "replay", "forbidden"}

func (s Status) String() string {
	if s < numStatuses {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Refusal reports whether s says the request was not executed because of
// its credentials or freshness (as opposed to a result).
func (s Status) Refusal() bool { return s >= StatusRefused && s < numStatuses }

// Role is the key a request is signed with. Values are append-only.
type Role uint8

const (
	// RoleAdmin may run every command.
	RoleAdmin Role = 1
	// RoleMonitor may run the commands that change nothing (query,
	// params, ip2mac, filter).
	RoleMonitor Role = 2
	numRoles    Role = 3
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r >= RoleAdmin && r < numRoles }

func (r Role) String() string {
	switch r {
	case RoleAdmin:
		return "admin"
	case RoleMonitor:
		return "monitor"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// ParseRole returns the role named s.
func ParseRole(s string) (Role, error) {
	switch s {
	case "admin":
		return RoleAdmin, nil
	case "monitor":
		return RoleMonitor, nil
	}
	return 0, fmt.Errorf("unknown role %q (admin or monitor)", s)
}

// Allows reports whether role r may run command c.
func (r Role) Allows(c Command) bool { return r == RoleAdmin || r == RoleMonitor && !c.Changes() }

// Message is a request or a reply. Layout (big endian):
//
//	 0  magic "NLBR"                 4
//	 4  version (2)                  1
//	 5  kind (1 request, 2 reply)    1
//	 6  command                      1
//	 7  status (replies; 0 in requests) 1
//	 8  request ID                   8   chosen by the client, echoed
//	16  host ID                      1   request: target (0 = every host
//	                                     reached); reply: the answering host
//	17  role (1 admin, 2 monitor)    1   the key the tag is made with
//	18  body length N                2
//	20  timestamp (Unix ns)          8   request: when sent; reply: 0
//	28  nonce                       16   request: random; reply: the request's
//	44  destination (IPv4)           4   request: the address it is sent to
//	                                     (a VIP, or a host's dedicated IP);
//	                                     reply: the request's
//	48  body (JSON)                  N
//	48+N HMAC-SHA256                32   over bytes 0..48+N with the role's key
//
// The destination and target host are under the tag: a captured request
// runs nowhere but where it was sent (docs/protocol.md).
type Message struct {
	Kind      Kind
	Command   Command
	Status    Status
	RequestID uint64
	Host      uint8
	Role      Role
	Timestamp int64
	Nonce     [16]byte
	Dest      netip.Addr
	Body      []byte
}

// Errors returned by Unmarshal.
var (
	ErrShort     = errors.New("remote: datagram too short")
	ErrOversized = errors.New("remote: datagram too large")
	ErrMagic     = errors.New("remote: bad magic")
	ErrVersion   = errors.New("remote: unsupported version")
	ErrKind      = errors.New("remote: unknown message kind")
	ErrLength    = errors.New("remote: body length does not match the datagram")
	ErrAuth      = errors.New("remote: authentication failed")
	ErrRole      = errors.New("remote: unknown key role")
)

// Key is the HMAC key of one role, derived from that role's key file with
// the role in the derivation, so that a tag made for one role (or for a
// heartbeat) is never valid for another.
type Key [32]byte

// DeriveKey derives role's remote-control key from the secret in its key
// file (or the cluster key, where no key file is set for the role).
func DeriveKey(secret []byte, role Role) Key {
	m := hmac.New(sha256.New, secret)
	fmt.Fprintf(m, "nlb remote control v2 role %d", uint8(role))
	var k Key
	copy(k[:], m.Sum(nil))
	return k
}

func maxBody(k Kind) int {
	if k == KindRequest {
		return MaxRequestBody
	}
	return MaxReplyBody
}

// Marshal encodes m and appends its tag. A nil key leaves the tag zero
// (the local control socket, trusted by its file permissions).
func Marshal(m *Message, key *Key) ([]byte, error) {
	if m.Kind != KindRequest && m.Kind != KindReply {
		return nil, ErrKind
	}
	if len(m.Body) > maxBody(m.Kind) {
		return nil, fmt.Errorf("%w: body of %d bytes, at most %d", ErrOversized, len(m.Body), maxBody(m.Kind))
	}
	b := make([]byte, HeaderLen+len(m.Body)+MACLen)
	copy(b[0:4], Magic)
	b[4] = Version
	b[5] = byte(m.Kind)
	b[6] = byte(m.Command)
	b[7] = byte(m.Status)
	binary.BigEndian.PutUint64(b[8:16], m.RequestID)
	b[16] = m.Host
	b[17] = byte(m.Role)
	binary.BigEndian.PutUint16(b[18:20], uint16(len(m.Body)))
	binary.BigEndian.PutUint64(b[20:28], uint64(m.Timestamp))
	copy(b[28:44], m.Nonce[:])
	if m.Dest.IsValid() {
		d := DestKey(m.Dest)
		copy(b[44:48], d[:])
	}
	copy(b[HeaderLen:], m.Body)
	if key != nil {
		copy(b[HeaderLen+len(m.Body):], tag(key, b[:HeaderLen+len(m.Body)]))
	}
	return b, nil
}

// DestKey is what a message carries of its destination address (bytes
// 44–47): an IPv4 address itself, an IPv6 address the first four bytes
// of its SHA-256. A received message's Dest is these four bytes as an
// IPv4 address; compare destinations with SameDest.
func DestKey(a netip.Addr) [4]byte {
	a = a.Unmap()
	if a.Is4() {
		return a.As4()
	}
	b := a.As16()
	h := sha256.Sum256(b[:])
	return [4]byte(h[:4])
}

// SameDest reports whether two destinations (sent or received) carry the
// same key.
func SameDest(a, b netip.Addr) bool {
	if a.IsValid() != b.IsValid() {
		return false
	}
	return !a.IsValid() || DestKey(a) == DestKey(b)
}

func tag(key *Key, b []byte) []byte {
	h := hmac.New(sha256.New, key[:])
	h.Write(b)
	return h.Sum(nil)
}

// Unmarshal decodes b. With a key, the tag must verify (ErrAuth); with a
// nil key the tag is not checked (the local socket, or a first look at the
// header). The body does not alias b.
func Unmarshal(b []byte, key *Key) (*Message, error) {
	if len(b) < HeaderLen+MACLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrShort, len(b))
	}
	if len(b) > MaxDatagram {
		return nil, fmt.Errorf("%w: %d bytes", ErrOversized, len(b))
	}
	if string(b[0:4]) != Magic {
		return nil, ErrMagic
	}
	if b[4] != Version {
		return nil, fmt.Errorf("%w: %d", ErrVersion, b[4])
	}
	m := &Message{Kind: Kind(b[5]), Command: Command(b[6]), Status: Status(b[7])}
	if m.Kind != KindRequest && m.Kind != KindReply {
		return nil, fmt.Errorf("%w: %d", ErrKind, b[5])
	}
	m.Role = Role(b[17])
	if m.Role != 0 && !m.Role.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrRole, b[17])
	}
	n := int(binary.BigEndian.Uint16(b[18:20]))
	if n > maxBody(m.Kind) {
		return nil, fmt.Errorf("%w: body of %d bytes", ErrOversized, n)
	}
	if len(b) != HeaderLen+n+MACLen {
		return nil, fmt.Errorf("%w: header says %d body bytes in a %d-byte datagram", ErrLength, n, len(b))
	}
	if key != nil && !hmac.Equal(tag(key, b[:HeaderLen+n]), b[HeaderLen+n:]) {
		return nil, ErrAuth
	}
	m.RequestID = binary.BigEndian.Uint64(b[8:16])
	m.Host = b[16]
	m.Timestamp = int64(binary.BigEndian.Uint64(b[20:28]))
	copy(m.Nonce[:], b[28:44])
	if d := [4]byte(b[44:48]); d != [4]byte{} {
		m.Dest = netip.AddrFrom4(d)
	}
	m.Body = append([]byte(nil), b[HeaderLen:HeaderLen+n]...)
	return m, nil
}

// readAll reads a whole stream (the local control socket) up to max bytes.
func readAll(r io.Reader, max int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, ErrOversized
	}
	return b, nil
}
