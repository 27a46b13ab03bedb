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
)

// DefaultPort is the remote-control UDP port (NLB's).
const DefaultPort = 2504

// Wire constants.
const (
	Magic   = "NLBR"
	Version = 1
	// HeaderLen is the fixed header before the body.
	HeaderLen = 44
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
	numCommands
)

var commandNames = [numCommands]string{"", "query", "start", "stop", "drainstop", "suspend",
	"resume", "enable", "disable", "drain", "params", "reload", "ip2mac", "filter"}

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
	case CmdQuery, CmdParams, CmdIP2MAC, CmdFilter:
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
	// StatusRefused: the request was not authentic (wrong key, stale
	// timestamp, replayed nonce). Such replies carry no valid tag: the
	// host cannot prove anything to a client that does not share its key.
	StatusRefused
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusFailed:
		return "failed"
	case StatusRefused:
		return "refused"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Message is a request or a reply. Layout (big endian):
//
//	 0  magic "NLBR"                 4
//	 4  version (1)                  1
//	 5  kind (1 request, 2 reply)    1
//	 6  command                      1
//	 7  status (replies; 0 in requests) 1
//	 8  request ID                   8   chosen by the client, echoed
//	16  host ID                      1   request: target (0 = every host);
//	                                     reply: the answering host
//	17  reserved (0)                 1
//	18  body length N                2
//	20  timestamp (Unix ns)          8
//	28  nonce                       16   request: random; reply: the request's
//	44  body (JSON)                  N
//	44+N HMAC-SHA256                32   over bytes 0..44+N with the remote key
type Message struct {
	Kind      Kind
	Command   Command
	Status    Status
	RequestID uint64
	Host      uint8
	Timestamp int64
	Nonce     [16]byte
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
	ErrReserved  = errors.New("remote: reserved byte is not zero")
)

// Key is the HMAC key of remote control, derived from the cluster key so
// that a heartbeat tag can never be replayed as a command.
type Key [32]byte

// DeriveKey derives the remote-control key from the cluster key.
func DeriveKey(clusterKey []byte) Key {
	m := hmac.New(sha256.New, clusterKey)
	m.Write([]byte("nlb remote control v1"))
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
// (refusals, which cannot be authenticated).
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
	binary.BigEndian.PutUint16(b[18:20], uint16(len(m.Body)))
	binary.BigEndian.PutUint64(b[20:28], uint64(m.Timestamp))
	copy(b[28:44], m.Nonce[:])
	copy(b[HeaderLen:], m.Body)
	if key != nil {
		copy(b[HeaderLen+len(m.Body):], tag(key, b[:HeaderLen+len(m.Body)]))
	}
	return b, nil
}

func tag(key *Key, b []byte) []byte {
	h := hmac.New(sha256.New, key[:])
	h.Write(b)
	return h.Sum(nil)
}

// Unmarshal decodes b. With a key, the tag must verify (ErrAuth); with a
// nil key the tag is not checked (a client reading a refusal). The body
// does not alias b.
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
	if b[17] != 0 {
		return nil, ErrReserved
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
