package remote

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"time"
)

// HostReply is one host's answer.
type HostReply struct {
	Status Status
	Reply
}

// Result is what a request gathered.
type Result struct {
	// Replies are the authentic replies, one per host, by host ID.
	Replies []HostReply
	// Refused are the hosts that refused the request (stale, replayed or
	// forbidden: see RefusedWhy), in tagged answers.
	Refused []uint8
	// RefusedWhy is each refusing host's status.
	RefusedWhy map[uint8]Status
	// Missing are hosts expected to answer that did not: hosts named as
	// peers by a replying host, or the targeted host.
	Missing []uint8
}

// Client sends requests and gathers replies.
type Client struct {
	Key  *Key // the role's key
	Role Role // RoleAdmin if zero
	// Timeout bounds the wait for replies.
	Timeout time.Duration
	// Settle is how long to keep listening for more replies once every
	// expected host answered (other hosts may still be on their way).
	Settle time.Duration
	// OneHost says the address is one host's own (not a VIP): its reply
	// alone is expected, not its peers'.
	OneHost bool
}

func newRequest(target uint8, cmd Command, args Args, role Role, dest netip.Addr) (*Message, error) {
	body, err := json.Marshal(args)
	if err != nil {
		return nil, err
	}
	if string(body) == "{}" {
		body = nil
	}
	m := &Message{Kind: KindRequest, Command: cmd, Host: target, Role: role, Dest: dest, Timestamp: time.Now().UnixNano(), Body: body}
	if _, err := rand.Read(m.Nonce[:]); err != nil {
		return nil, err
	}
	m.RequestID = binary.BigEndian.Uint64(m.Nonce[:8]) ^ uint64(m.Timestamp)
	return m, nil
}

// Do sends one request to addr (a VIP: every host answers; or a host's
// dedicated IP) and gathers replies. target 0 asks every host that
// receives it; otherwise only that host ID answers.
func (c *Client) Do(ctx context.Context, addr netip.AddrPort, target uint8, cmd Command, args Args) (*Result, error) {
	if c.Key == nil {
		return nil, errors.New("remote: a key is required")
	}
	role := c.Role
	if role == 0 {
		role = RoleAdmin
	}
	req, err := newRequest(target, cmd, args, role, addr.Addr())
	if err != nil {
		return nil, err
	}
	b, err := Marshal(req, c.Key)
	if err != nil {
		return nil, err
	}
	// Unconnected: replies come from each host, from the address the
	// request was sent to or, on hosts that cannot do that, their own.
	network := "udp4"
	if addr.Addr().Is6() {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, nil)
	if err != nil {
		return nil, fmt.Errorf("remote: %w", err)
	}
	defer conn.Close()
	if _, err := conn.WriteToUDPAddrPort(b, addr); err != nil {
		return nil, fmt.Errorf("remote: send to %s: %w", addr, err)
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 2 * time.Second
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	g := newGather(req, target)
	g.oneHost = c.OneHost
	buf := make([]byte, MaxDatagram+1)
	// Until every expected host has answered, the same datagram goes out
	// again every quarter of the timeout (at most Resends times): a
	// request lost on the way (a host's socket overflowing under a flood)
	// gets a second chance. A host that already ran it refuses the copy as
	// a replay, which the gather ignores: a command still runs once.
	resend := max(timeout/(Resends+1), 50*time.Millisecond)
	nextSend, sends := time.Now().Add(resend), 0
	for {
		end := deadline
		if !g.complete() && sends < Resends && nextSend.Before(end) {
			end = nextSend
		}
		if g.complete() {
			settle := c.Settle
			if settle == 0 {
				settle = 100 * time.Millisecond
			}
			if s := g.completeAt.Add(settle); s.Before(end) {
				end = s
			}
		}
		conn.SetReadDeadline(end)
		n, _, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return nil, fmt.Errorf("remote: receive: %w", err)
			}
			if now := time.Now(); !g.complete() && sends < Resends && now.Before(deadline) && !now.Before(nextSend) {
				if _, err := conn.WriteToUDPAddrPort(b, addr); err != nil {
					return nil, fmt.Errorf("remote: send to %s: %w", addr, err)
				}
				sends++
				g.resent = true
				nextSend = now.Add(resend)
				continue
			}
			return g.result(), nil
		}
		g.add(buf[:n], c.Key)
	}
}

// Resends is how many times Client.Do sends a request again while hosts
// it expects have not answered.
const Resends = 3

// DoLocal sends one request to the local agent's control socket.
func DoLocal(ctx context.Context, path string, cmd Command, args Args) (*Result, error) {
	req, err := newRequest(0, cmd, args, 0, netip.Addr{})
	if err != nil {
		return nil, err
	}
	b, err := Marshal(req, nil)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("remote: local agent at %s: %w", path, err)
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	if _, err := conn.Write(b); err != nil {
		return nil, fmt.Errorf("remote: local send: %w", err)
	}
	conn.(*net.UnixConn).CloseWrite()
	out, err := readAll(conn, MaxDatagram)
	if err != nil {
		return nil, fmt.Errorf("remote: local receive: %w", err)
	}
	g := newGather(req, 0)
	g.add(out, nil)
	if len(g.replies) == 0 {
		return nil, errors.New("remote: the local agent sent no valid reply")
	}
	g.expected = nil // the local agent answers for itself only
	return g.result(), nil
}

// gather collects the replies to one request.
type gather struct {
	req        *Message
	target     uint8
	replies    map[uint8]HostReply
	refused    map[uint8]Status
	expected   map[uint8]bool
	oneHost    bool // expect the first replying host only
	resent     bool // the request went out more than once
	completeAt time.Time
}

func newGather(req *Message, target uint8) *gather {
	g := &gather{req: req, target: target, replies: map[uint8]HostReply{}, refused: map[uint8]Status{}, expected: map[uint8]bool{}}
	if target != 0 {
		g.expected[target] = true
	}
	return g
}

// add takes one datagram; anything not an authentic reply to our request
// is ignored: a forged refusal or answer cannot change what nlbctl
// reports. key is nil only for the local socket.
func (g *gather) add(b []byte, key *Key) {
	m, err := Unmarshal(b, key)
	if err != nil || m.Kind != KindReply || m.RequestID != g.req.RequestID || m.Nonce != g.req.Nonce ||
		!SameDest(m.Dest, g.req.Dest) || m.Role != g.req.Role || m.Command != g.req.Command {
		return
	}
	if m.Status.Refusal() {
		if len(m.Body) != 0 || m.Host == 0 {
			return
		}
		if m.Status == StatusReplay && g.resent {
			// A copy of our own request: that host got an earlier one
			// (its answer is on its way, or was lost).
			return
		}
		g.refused[m.Host] = m.Status
	} else {
		var r Reply
		if json.Unmarshal(m.Body, &r) != nil || r.Host != m.Host {
			return
		}
		g.replies[m.Host] = HostReply{Status: m.Status, Reply: r}
		if g.target == 0 && !g.oneHost {
			for _, p := range r.Peers {
				g.expected[p] = true
			}
		}
	}
	if g.completeAt.IsZero() && g.complete() {
		g.completeAt = time.Now()
	}
}

func (g *gather) complete() bool {
	if len(g.replies)+len(g.refused) == 0 {
		return false
	}
	for id := range g.expected {
		if _, ok := g.replies[id]; !ok && g.refused[id] == 0 {
			return false
		}
	}
	return true
}

func (g *gather) result() *Result {
	r := &Result{RefusedWhy: map[uint8]Status{}}
	for _, hr := range g.replies {
		r.Replies = append(r.Replies, hr)
	}
	sort.Slice(r.Replies, func(i, j int) bool { return r.Replies[i].Host < r.Replies[j].Host })
	for id, st := range g.refused {
		r.Refused = append(r.Refused, id)
		r.RefusedWhy[id] = st
	}
	for id := range g.expected {
		if _, ok := g.replies[id]; !ok && g.refused[id] == 0 {
			r.Missing = append(r.Missing, id)
		}
	}
	sort.Slice(r.Refused, func(i, j int) bool { return r.Refused[i] < r.Refused[j] })
	sort.Slice(r.Missing, func(i, j int) bool { return r.Missing[i] < r.Missing[j] })
	return r
}
