package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	api "github.com/osrg/gobgp/v3/api"
	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/nlbproject/nlb/config"
)

// Speaker is this host's BGP speaker: sessions to the configured routers
// (this host connects; it does not listen), and the VIP routes it
// announces, each a /32 whose next hop is the cluster's next-hop VIP.
// Its failures (a router down, a refused session) are logged and shown in
// its status; they never touch the cluster's own serving.
type Speaker struct {
	cfg *config.BGP
	log hclog.Logger
	srv *server.BgpServer

	mu        sync.Mutex
	announced map[netip.Addr]bool
	reason    Reason
	peers     map[string]string // address -> session state
	// OnChange, if set, hears announcement and session changes (the event
	// history): what, e.g. "announced 198.19.200.1", "session 198.18.0.254 established".
	OnChange func(what string)
}

// Status is the speaker's state for query and metrics.
type Status struct {
	Announced []string          `json:"announced"`
	Withdrawn string            `json:"withdrawn_because,omitempty"`
	Peers     map[string]string `json:"peers"`
}

// NewSpeaker returns a speaker for cfg; Start starts it.
func NewSpeaker(cfg *config.BGP, log hclog.Logger) *Speaker {
	return &Speaker{cfg: cfg, log: log, announced: map[netip.Addr]bool{}, peers: map[string]string{}}
}

var family = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}

// Start starts the BGP server and its sessions. localAddr is the address
// sessions are opened from (the dedicated IP).
func (s *Speaker) Start(ctx context.Context, localAddr netip.Addr) error {
	s.srv = server.NewBgpServer(server.LoggerOption(&logAdapter{s.log}))
	go s.srv.Serve()
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn: s.cfg.LocalAS, RouterId: s.cfg.RouterID.String(), ListenPort: -1, // sessions are opened from here only
	}}); err != nil {
		s.srv.Stop()
		return fmt.Errorf("bgp: start: %w", err)
	}
	if err := s.srv.WatchEvent(ctx, &api.WatchEventRequest{Peer: &api.WatchEventRequest_Peer{}}, s.peerEvent); err != nil {
		s.srv.Stop()
		return fmt.Errorf("bgp: watch: %w", err)
	}
	hold := uint64(s.cfg.HoldTime / time.Second)
	for _, p := range s.cfg.Peers {
		peer := &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.AS, AuthPassword: p.Password},
			Transport: &api.Transport{LocalAddress: localAddr.String(), RemotePort: uint32(p.Port)},
			Timers: &api.Timers{Config: &api.TimersConfig{HoldTime: hold, KeepaliveInterval: max(hold/3, 1),
				ConnectRetry: 2}},
		}
		if p.TTLSecurity {
			peer.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: 255}
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: peer}); err != nil {
			s.srv.Stop()
			return fmt.Errorf("bgp: peer %s: %w", p.Address, err)
		}
		s.mu.Lock()
		s.peers[p.Address.String()] = "idle"
		s.mu.Unlock()
	}
	return nil
}

func (s *Speaker) peerEvent(r *api.WatchEventResponse) {
	p := r.GetPeer()
	if p == nil || p.Type != api.WatchEventResponse_PeerEvent_STATE || p.Peer == nil || p.Peer.State == nil {
		return
	}
	addr := p.Peer.State.NeighborAddress
	st := sessionWords(p.Peer.State.SessionState)
	s.mu.Lock()
	was, known := s.peers[addr]
	s.peers[addr] = st
	s.mu.Unlock()
	if known && was != st && (st == "established" || was == "established") {
		s.log.Info("bgp session", "peer", addr, "state", st)
		if s.OnChange != nil {
			s.OnChange(fmt.Sprintf("session with %s %s", addr, st))
		}
	}
}

func sessionWords(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_ESTABLISHED:
		return "established"
	case api.PeerState_IDLE:
		return "idle"
	case api.PeerState_CONNECT:
		return "connect"
	case api.PeerState_ACTIVE:
		return "active"
	case api.PeerState_OPENSENT:
		return "opensent"
	case api.PeerState_OPENCONFIRM:
		return "openconfirm"
	}
	return "unknown"
}

// Update announces the VIPs v allows and withdraws the others.
func (s *Speaker) Update(ctx context.Context, v View) {
	want, why := Announceable(v, s.cfg.Announce)
	s.Apply(ctx, want, why)
}

// Apply announces want (Announceable's answer) and withdraws the others;
// why is the reason when want is empty.
func (s *Speaker) Apply(ctx context.Context, want []netip.Addr, why Reason) {
	wantSet := map[netip.Addr]bool{}
	for _, a := range want {
		wantSet[a] = true
	}
	s.mu.Lock()
	s.reason = why
	var add, del []netip.Addr
	for _, a := range want {
		if !s.announced[a] {
			add = append(add, a)
		}
	}
	for a := range s.announced {
		if !wantSet[a] {
			del = append(del, a)
		}
	}
	s.mu.Unlock()
	for _, a := range add {
		if _, err := s.srv.AddPath(ctx, &api.AddPathRequest{Path: s.path(a, false)}); err != nil {
			s.log.Warn("bgp: announce", "vip", a, "error", err)
			continue
		}
		s.mu.Lock()
		s.announced[a] = true
		s.mu.Unlock()
		s.log.Info("bgp: announced", "vip", a, "next_hop", s.cfg.NextHop)
		if s.OnChange != nil {
			s.OnChange(fmt.Sprintf("announced %s/32 via %s", a, s.cfg.NextHop))
		}
	}
	for _, a := range del {
		if err := s.srv.DeletePath(ctx, &api.DeletePathRequest{Family: family, Path: s.path(a, true)}); err != nil {
			s.log.Warn("bgp: withdraw", "vip", a, "error", err)
			continue
		}
		s.mu.Lock()
		delete(s.announced, a)
		s.mu.Unlock()
		s.log.Info("bgp: withdrawn", "vip", a, "because", why)
		if s.OnChange != nil {
			s.OnChange(fmt.Sprintf("withdrew %s/32: %s", a, why))
		}
	}
}

func (s *Speaker) path(vip netip.Addr, withdraw bool) *api.Path {
	nlri, _ := anypb.New(&api.IPAddressPrefix{Prefix: vip.String(), PrefixLen: 32})
	origin, _ := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	nh, _ := anypb.New(&api.NextHopAttribute{NextHop: s.cfg.NextHop.String()})
	return &api.Path{Family: family, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}, IsWithdraw: withdraw}
}

// Status returns what the speaker announces and its sessions' states.
func (s *Speaker) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Announced: []string{}, Withdrawn: string(s.reason), Peers: map[string]string{}}
	for a := range s.announced {
		st.Announced = append(st.Announced, a.String())
	}
	sort.Strings(st.Announced)
	for k, v := range s.peers {
		st.Peers[k] = v
	}
	return st
}

// Stop withdraws every route and closes the sessions (a NOTIFICATION:
// the routers drop this host's routes at once, without waiting for the
// hold time).
func (s *Speaker) Stop() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	s.Update(ctx, View{})
	if err := s.srv.StopBgp(ctx, &api.StopBgpRequest{}); err != nil {
		s.log.Warn("bgp: stop", "error", err)
	}
	s.srv.Stop()
}

// logAdapter sends gobgp's log lines to the agent's logger (debug lines
// at trace).
type logAdapter struct{ l hclog.Logger }

func fields(f gobgplog.Fields) []any {
	out := make([]any, 0, 2*len(f))
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		out = append(out, k, f[k])
	}
	return out
}

func (a *logAdapter) Panic(msg string, f gobgplog.Fields) { a.l.Error(msg, fields(f)...) }
func (a *logAdapter) Fatal(msg string, f gobgplog.Fields) { a.l.Error(msg, fields(f)...) }
func (a *logAdapter) Error(msg string, f gobgplog.Fields) { a.l.Error(msg, fields(f)...) }
func (a *logAdapter) Warn(msg string, f gobgplog.Fields)  { a.l.Warn(msg, fields(f)...) }
func (a *logAdapter) Info(msg string, f gobgplog.Fields)  { a.l.Debug(msg, fields(f)...) }
func (a *logAdapter) Debug(msg string, f gobgplog.Fields) { a.l.Trace(msg, fields(f)...) }
func (a *logAdapter) SetLevel(gobgplog.LogLevel)          {}
func (a *logAdapter) GetLevel() gobgplog.LogLevel         { return gobgplog.InfoLevel }
