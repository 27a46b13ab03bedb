package remote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/ipv4"
	"golang.org/x/sync/errgroup"
)

// Args are a request's arguments (its JSON body).
type Args struct {
	// Rule names a port rule for enable, disable and drain: its name,
	// "VIP:port", "port", or "all".
	Rule string `json:"rule,omitempty"`
	// VIP is ip2mac's address.
	VIP string `json:"vip,omitempty"`
	// Client ("IP:port"), Dest ("VIP:port") and Proto ("tcp" or "udp")
	// are filter's flow.
	Client string `json:"client,omitempty"`
	Dest   string `json:"dest,omitempty"`
	Proto  string `json:"proto,omitempty"`
	// Since (events): only events after this sequence number; SinceTime
	// (Unix ns): only events at or after this time. Limit bounds the
	// events in one reply (0: as many as fit).
	Since     uint64 `json:"since,omitempty"`
	SinceTime int64  `json:"since_time,omitempty"`
	Limit     int    `json:"limit,omitempty"`
	// Buckets (ports): include each rule's bucket owners and marks.
	Buckets bool `json:"buckets,omitempty"`
}

// Source is who sent a request: the local socket, or an address with the
// key's role. Handlers read it with SourceFrom (the event history records
// each command with its source).
type Source struct {
	Local bool
	Addr  netip.Addr
	Role  Role
}

func (s Source) String() string {
	if s.Local {
		return "local socket"
	}
	return s.Addr.String() + " (" + s.Role.String() + " key)"
}

type sourceKey struct{}

// WithSource returns ctx carrying src.
func WithSource(ctx context.Context, src Source) context.Context {
	return context.WithValue(ctx, sourceKey{}, src)
}

// SourceFrom returns the request source ctx carries, if any.
func SourceFrom(ctx context.Context) (Source, bool) {
	s, ok := ctx.Value(sourceKey{}).(Source)
	return s, ok
}

// Reply is a reply's JSON body.
type Reply struct {
	Host  uint8  `json:"host"`
	State string `json:"state"`
	// Peers are the hosts this host hears, itself included: a client
	// that asked every host expects a reply from each of them.
	Peers  HostIDs         `json:"peers"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Handler executes commands; the agent implements it.
type Handler interface {
	// Identity returns this host's ID, its state in words, and the hosts
	// it hears (itself included).
	Identity() (id uint8, state string, peers []uint8)
	// Handle runs one command. Its result is marshalled as JSON.
	Handle(ctx context.Context, cmd Command, args Args) (result any, err error)
}

// Server serves remote control over UDP (authenticated) and the local
// control socket (trusted by its file permissions).
type Server struct {
	h     Handler
	guard *Guard
	log   hclog.Logger

	// Refusal log lines are rate-limited: at most one per reason per
	// refusalLogEvery, with the count since the last one.
	logMu      sync.Mutex
	lastLogged [numRefusals]time.Time
	unlogged   [numRefusals]uint64

	// OnRefusal, if set, hears refusals at the rate they are logged
	// (one per reason per refusalLogEvery, with how many more were not
	// reported since the last): the event history's feed.
	OnRefusal func(src netip.Addr, why Refusal, more uint64)

	// replies counts answered requests per command and outcome (ok or
	// failed); refusals are counted by the guard.
	replies [numCommands][StatusRefused]atomic.Uint64
}

// Replies returns how many requests for cmd were answered with st (ok or
// failed), over UDP and the local socket.
func (s *Server) Replies(cmd Command, st Status) uint64 {
	if !cmd.Valid() || st >= StatusRefused {
		return 0
	}
	return s.replies[cmd][st].Load()
}

// refusalLogEvery bounds refusal log lines per reason.
const refusalLogEvery = 10 * time.Second

// NewServer returns a server for these keys and this host, refusing
// requests stamped before since (the agent's start); it starts nothing.
func NewServer(keys Keys, local Local, since time.Time, h Handler, log hclog.Logger) *Server {
	return &Server{h: h, guard: NewGuard(keys, local, since), log: log}
}

// SetKeys replaces the keyrings (a reload during a key rotation).
func (s *Server) SetKeys(k Keys) { s.guard.SetKeys(k) }

// Guard returns the server's guard (for its counters).
func (s *Server) Guard() *Guard { return s.guard }

// ServeUDP serves datagrams on conn until ctx ends. Replies leave from the
// address the request was sent to (a VIP or the dedicated IP), so a client
// that sent to the VIP sees the VIP answer. The agent binds one conn per
// address it serves.
func (s *Server) ServeUDP(ctx context.Context, conn *net.UDPConn) error {
	bound := conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	pc := ipv4.NewPacketConn(conn)
	if err := pc.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
		return fmt.Errorf("remote: pktinfo: %w", err)
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		conn.Close()
		return nil
	})
	g.Go(func() error {
		buf := make([]byte, MaxDatagram+1)
		for {
			n, cm, src, err := pc.ReadFrom(buf)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("remote: read: %w", err)
			}
			ua, ok := src.(*net.UDPAddr)
			if !ok {
				continue
			}
			from := ua.AddrPort()
			dst := bound
			if cm != nil && cm.Dst != nil {
				if a, ok := netip.AddrFromSlice(cm.Dst.To4()); ok {
					dst = a
				}
			}
			out := s.handleDatagram(ctx, buf[:n], dst, from.Addr().Unmap(), time.Now())
			if out == nil {
				continue
			}
			var wcm *ipv4.ControlMessage
			if cm != nil && cm.Dst != nil && !cm.Dst.IsMulticast() {
				wcm = &ipv4.ControlMessage{Src: cm.Dst}
			}
			if _, err := pc.WriteTo(out, wcm, ua); err != nil {
				s.log.Debug("remote reply failed", "to", from, "error", err)
			}
		}
	})
	return g.Wait()
}

// handleDatagram returns the reply to send, or nil. Only an authentic
// request gets an answer: a datagram whose tag does not verify, or that
// was meant for another address or host, gets nothing. An authentic
// request refused for its freshness or role gets a tagged answer with no
// body, no larger than the request, within a global budget.
func (s *Server) handleDatagram(ctx context.Context, b []byte, dst, src netip.Addr, now time.Time) []byte {
	m, key, why := s.guard.Check(b, dst, src, now)
	switch why {
	case RefusedNone:
	case RefusedStale, RefusedReplay, RefusedForbidden:
		s.noteRefusal(src, why, now)
		if !s.guard.AnswerRefusal(now) {
			return nil
		}
		st := map[Refusal]Status{RefusedStale: StatusStale, RefusedReplay: StatusReplay, RefusedForbidden: StatusForbidden}[why]
		id, _, _ := s.h.Identity()
		out, _ := Marshal(&Message{Kind: KindReply, Command: m.Command, Status: st, RequestID: m.RequestID,
			Host: id, Role: m.Role, Nonce: m.Nonce, Dest: m.Dest}, key)
		return out
	case RefusedUnknown:
		return s.reply(m, Reply{Error: fmt.Sprintf("unknown command %d", m.Command)}, StatusFailed, key)
	default:
		s.noteRefusal(src, why, now)
		return nil
	}
	s.log.Info("remote command", "from", src, "command", m.Command, "role", m.Role)
	return s.execute(WithSource(ctx, Source{Addr: src, Role: m.Role}), m, key)
}

// noteRefusal logs a refusal, at most once per reason per
// refusalLogEvery (with how many were not logged since): a flood of
// forged datagrams must not flood the journal.
func (s *Server) noteRefusal(src netip.Addr, why Refusal, now time.Time) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if now.Sub(s.lastLogged[why]) < refusalLogEvery {
		s.unlogged[why]++
		return
	}
	s.log.Warn("remote request refused", "from", src, "reason", why, "more_since_last_line", s.unlogged[why])
	if s.OnRefusal != nil {
		s.OnRefusal(src, why, s.unlogged[why])
	}
	s.lastLogged[why], s.unlogged[why] = now, 0
}

// execute runs an accepted request and returns the reply datagram.
func (s *Server) execute(ctx context.Context, m *Message, key *Key) []byte {
	var args Args
	if len(m.Body) > 0 {
		if err := json.Unmarshal(m.Body, &args); err != nil {
			return s.reply(m, Reply{Error: "bad arguments: " + err.Error()}, StatusFailed, key)
		}
	}
	res, err := s.h.Handle(ctx, m.Command, args)
	if err != nil {
		return s.reply(m, Reply{Error: err.Error()}, StatusFailed, key)
	}
	var r Reply
	if res != nil {
		raw, err := json.Marshal(res)
		if err != nil {
			return s.reply(m, Reply{Error: "encode result: " + err.Error()}, StatusFailed, key)
		}
		r.Result = raw
	}
	return s.reply(m, r, StatusOK, key)
}

// reply fills in the identity and encodes the reply.
func (s *Server) reply(m *Message, r Reply, st Status, key *Key) []byte {
	defer func() {
		if m.Command.Valid() && st < StatusRefused {
			s.replies[m.Command][st].Add(1)
		}
	}()
	r.Host, r.State, r.Peers = s.h.Identity()
	body, err := json.Marshal(r)
	if err == nil && len(body) > MaxReplyBody {
		err = fmt.Errorf("reply of %d bytes, at most %d", len(body), MaxReplyBody)
	}
	if err != nil {
		r.Result, r.Error, st = nil, err.Error(), StatusFailed
		body, _ = json.Marshal(r)
	}
	out, err := Marshal(&Message{Kind: KindReply, Command: m.Command, Status: st, RequestID: m.RequestID,
		Host: r.Host, Role: m.Role, Nonce: m.Nonce, Dest: m.Dest, Body: body}, key)
	if err != nil {
		s.log.Error("remote reply encode failed", "error", err)
		return nil
	}
	return out
}

// ServeLocal serves the local control socket until ctx ends: one request
// and one reply per connection, untagged (only root can open the socket).
func (s *Server) ServeLocal(ctx context.Context, l *net.UnixListener) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		l.Close()
		return nil
	})
	g.Go(func() error {
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				if errors.Is(err, net.ErrClosed) {
					return nil
				}
				return fmt.Errorf("remote: local accept: %w", err)
			}
			g.Go(func() error {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				b, err := readAll(c, HeaderLen+MaxRequestBody+MACLen)
				if err != nil {
					return nil
				}
				m, err := Unmarshal(b, nil)
				if err != nil || m.Kind != KindRequest {
					return nil
				}
				var out []byte
				if !m.Command.Valid() {
					out = s.reply(m, Reply{Error: fmt.Sprintf("unknown command %d", m.Command)}, StatusFailed, nil)
				} else {
					s.log.Info("local command", "command", m.Command)
					out = s.execute(WithSource(ctx, Source{Local: true}), m, nil)
				}
				c.Write(out)
				return nil
			})
		}
	})
	return g.Wait()
}
