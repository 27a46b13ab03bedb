// Package webui is nlbctl ui: a web page, served from assets embedded in
// the binary, that shows the cluster as the control protocol reports it
// and, with the admin key, runs operator commands. The page talks only to
// this server; this server talks to the cluster over remote control (a
// SendFunc), polling it once an interval.
package webui

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/remote"
)

//go:embed assets
var assets embed.FS

// Options configure a Server.
type Options struct {
	// Send reaches the cluster (nlbctl's --cluster, --host or the local
	// socket, with its key).
	Send remote.SendFunc
	// Role is the key's: admin may run commands from the page, monitor
	// only looks.
	Role remote.Role
	// Interval is how often the cluster is polled (default 1s).
	Interval time.Duration
	// Title names the cluster on the page (the address it is reached at).
	Title string
}

// EventsKept is how many recent events the page shows.
const EventsKept = 200

// Server serves the page and its API.
type Server struct {
	o      Options
	mux    *http.ServeMux
	mu     sync.Mutex
	view   View
	reader remote.EventReader
	prev   map[uint8]sample
	polled bool
}

type sample struct {
	at                time.Time
	accepted, dropped uint64
}

// View is what /api/state returns: the cluster as last polled.
type View struct {
	Title   string             `json:"title"`
	Updated string             `json:"updated"`
	Admin   bool               `json:"admin"`
	Error   string             `json:"error,omitempty"`
	Hosts   []HostView         `json:"hosts"`
	Rules   []string           `json:"rules"`
	Events  []remote.HostEvent `json:"events"`
}

// HostView is one host's card.
type HostView struct {
	ID        uint8          `json:"id"`
	Answering bool           `json:"answering"`
	State     string         `json:"state"`
	Why       string         `json:"why,omitempty"`
	Epoch     uint64         `json:"epoch"`
	Members   remote.HostIDs `json:"members"`
	Version   string         `json:"version"`
	Uptime    string         `json:"uptime"`
	// Sick: not answering (silent, evicted), or something keeps it from
	// its share (Notes).
	Sick  bool     `json:"sick"`
	Notes []string `json:"notes"`
	// Share is the percentage of each rule's buckets it takes new flows
	// in.
	Share map[string]float64 `json:"share"`
	// AcceptPPS and DropPPS are its data plane's packet rates over the
	// last poll (-1: not known yet).
	AcceptPPS float64           `json:"accept_pps"`
	DropPPS   float64           `json:"drop_pps"`
	Rules     []remote.PortRule `json:"rules"`
}

// New returns a server; Run polls the cluster for it.
func New(o Options) *Server {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	s := &Server{o: o, prev: map[uint8]sample{}}
	s.view = View{Title: o.Title, Admin: o.Role == remote.RoleAdmin, Hosts: []HostView{}, Rules: []string{}, Events: []remote.HostEvent{}}
	sub, _ := fs.Sub(assets, "assets")
	s.mux = http.NewServeMux()
	s.mux.Handle("GET /", http.FileServerFS(sub))
	s.mux.HandleFunc("GET /api/state", s.state)
	s.mux.HandleFunc("GET /api/buckets", s.buckets)
	s.mux.HandleFunc("POST /api/command", s.command)
	return s
}

// ServeHTTP refuses requests whose Host is a name other than localhost
// (a DNS-rebinding page could otherwise reach a server on loopback), and
// sets headers that keep the page from being framed or its API read
// cross-origin.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
		http.Error(w, "nlbctl ui: reach it by IP address or localhost", http.StatusMisdirectedRequest)
		return
	}
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	s.mux.ServeHTTP(w, r)
}

// Run polls the cluster every interval until ctx ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		s.Poll(time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll asks the cluster once and updates the view.
func (s *Server) Poll(now time.Time) {
	q, qerr := s.o.Send(0, remote.CmdQuery, remote.Args{})
	p, perr := s.o.Send(0, remote.CmdPorts, remote.Args{})
	since := int64(0)
	if s.polled {
		since = now.Add(-s.o.Interval - remote.MaxSkew).UnixNano()
	}
	evs, _, eerr := s.reader.Read(s.o.Send, 0, since)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.polled = true
	v := &s.view
	v.Updated = now.UTC().Format(time.RFC3339)
	v.Error = ""
	if err := errors.Join(qerr, perr, eerr); err != nil {
		v.Error = err.Error()
	}
	if q != nil {
		var ports []remote.PortsResult
		if p != nil {
			ports = remote.Ports(p)
		}
		v.Hosts, v.Rules = s.hosts(now, q, ports)
		if len(q.Replies) == 0 && v.Error == "" {
			v.Error = "no host answered"
		}
	}
	v.Events = append(v.Events, evs...)
	if n := len(v.Events); n > EventsKept {
		v.Events = append([]remote.HostEvent{}, v.Events[n-EventsKept:]...)
	}
}

// hosts builds the host cards from a query and a ports result: answering
// hosts, then the silent ones the others report.
func (s *Server) hosts(now time.Time, q *remote.Result, ports []remote.PortsResult) ([]HostView, []string) {
	var out []HostView
	rules := []string{}
	byHost := map[uint8][]remote.PortRule{}
	for _, p := range ports {
		byHost[p.Host] = p.Rules
	}
	next := map[uint8]sample{}
	for _, r := range remote.Queries(q) {
		h := HostView{ID: r.Host, Answering: true, State: r.State, Why: r.Why, Epoch: r.Epoch, Members: r.Members,
			Version: r.Version, Uptime: r.Uptime, Notes: r.Notes(), Share: map[string]float64{}, AcceptPPS: -1, DropPPS: -1,
			Rules: byHost[r.Host]}
		if h.Rules == nil {
			h.Rules = []remote.PortRule{}
		}
		if h.Members == nil {
			h.Members = remote.HostIDs{}
		}
		for name, n := range r.Owned {
			h.Share[name] = float64(n) * 100 / filter.Buckets
		}
		switch r.State {
		case "refused", "suspended":
			h.Notes = append(h.Notes, r.State)
		}
		h.Sick = len(h.Notes) > 0
		cur := sample{now, r.Accepted, r.Dropped}
		if p, ok := s.prev[r.Host]; ok && now.After(p.at) && cur.accepted >= p.accepted && cur.dropped >= p.dropped {
			sec := now.Sub(p.at).Seconds()
			h.AcceptPPS, h.DropPPS = float64(cur.accepted-p.accepted)/sec, float64(cur.dropped-p.dropped)/sec
		}
		next[r.Host] = cur
		out = append(out, h)
	}
	for _, p := range ports {
		if len(p.Rules) > len(rules) {
			rules = rules[:0]
			for _, pr := range p.Rules {
				rules = append(rules, pr.Name)
			}
		}
	}
	for _, row := range remote.SilentRows(q) {
		out = append(out, HostView{ID: row.Host, State: "no answer", Sick: true, Notes: []string{row.Notes},
			Members: remote.HostIDs{}, Share: map[string]float64{}, AcceptPPS: -1, DropPPS: -1, Rules: []remote.PortRule{}})
	}
	for _, id := range q.Missing {
		if !slices.ContainsFunc(out, func(h HostView) bool { return h.ID == id }) {
			out = append(out, HostView{ID: id, State: "no answer", Sick: true, Notes: []string{"did not answer"},
				Members: remote.HostIDs{}, Share: map[string]float64{}, AcceptPPS: -1, DropPPS: -1, Rules: []remote.PortRule{}})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	s.prev = next
	if out == nil {
		out = []HostView{}
	}
	return out, rules
}

func (s *Server) state(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	b, err := json.Marshal(s.view)
	s.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// BucketMap is /api/buckets: one rule's 4096 buckets.
type BucketMap struct {
	Rule  string `json:"rule"`
	Epoch uint64 `json:"epoch"`
	// Owners is each bucket's agreed owner (0: none).
	Owners []int `json:"owners"`
	// Flags marks buckets in handoff, one character each: "r" some host
	// retains it (carrying its held flows), "d" its new owner has it
	// dirty (taking new flows, passing others to the holder), "-" none.
	Flags string `json:"flags"`
}

func (s *Server) buckets(w http.ResponseWriter, r *http.Request) {
	rule := r.URL.Query().Get("rule")
	if rule == "" {
		http.Error(w, "name a rule: ?rule=NAME", http.StatusBadRequest)
		return
	}
	res, err := s.o.Send(0, remote.CmdPorts, remote.Args{Rule: rule, Buckets: true})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	m, err := mergeBuckets(rule, res)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(m)
}

// mergeBuckets makes one map of the hosts' answers: the owners of the
// newest epoch any host reports, and the handoff marks of every host.
func mergeBuckets(rule string, res *remote.Result) (*BucketMap, error) {
	m := &BucketMap{Rule: rule, Owners: make([]int, filter.Buckets)}
	flags := []byte(strings.Repeat("-", filter.Buckets))
	seen := false
	for _, p := range remote.Ports(res) {
		for _, pr := range p.Rules {
			if len(pr.Owners) != 2*filter.Buckets || len(pr.Marks) != filter.Buckets {
				continue
			}
			if !seen || p.Epoch > m.Epoch {
				seen, m.Epoch = true, p.Epoch
				for b := range m.Owners {
					var o int
					fmt.Sscanf(pr.Owners[2*b:2*b+2], "%02x", &o)
					m.Owners[b] = o
				}
			}
			for b := range flags {
				switch c := pr.Marks[b]; {
				case c == 'r':
					flags[b] = 'r'
				case c == 'd' && flags[b] != 'r':
					flags[b] = 'd'
				}
			}
		}
	}
	if !seen {
		for _, r := range res.Replies {
			if r.Error != "" {
				return nil, errors.New(r.Error)
			}
		}
		return nil, errors.New("no host sent the rule's buckets")
	}
	m.Flags = string(flags)
	return m, nil
}

// Commands the page may run, and whether each names a rule.
var pageCommands = map[string]bool{"start": false, "stop": false, "drainstop": false, "suspend": false,
	"resume": false, "enable": true, "disable": true, "drain": true}

// CommandRequest is /api/command's body.
type CommandRequest struct {
	Command string `json:"command"`
	Host    uint8  `json:"host"` // 0: every host
	Rule    string `json:"rule,omitempty"`
}

// CommandReply is /api/command's answer.
type CommandReply struct {
	OK      bool     `json:"ok"`
	Summary []string `json:"summary"`
}

// command runs an operator command from the page. Only with the admin
// key; only from the page itself (it sends X-NLB-UI, which a form on
// another site cannot, and a cross-origin script could only after a CORS
// preflight this server never grants).
func (s *Server) command(w http.ResponseWriter, r *http.Request) {
	if s.o.Role != remote.RoleAdmin {
		http.Error(w, "read-only: nlbctl ui runs with the monitor key", http.StatusForbidden)
		return
	}
	if r.Header.Get("X-NLB-UI") != "1" {
		http.Error(w, "missing X-NLB-UI header", http.StatusForbidden)
		return
	}
	var req CommandRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil {
		http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	needsRule, ok := pageCommands[req.Command]
	if !ok {
		http.Error(w, fmt.Sprintf("unknown command %q", req.Command), http.StatusBadRequest)
		return
	}
	if needsRule != (req.Rule != "") {
		http.Error(w, fmt.Sprintf("%s: rule %q", req.Command, req.Rule), http.StatusBadRequest)
		return
	}
	cmd, _ := remote.ParseCommand(req.Command)
	res, err := s.o.Send(req.Host, cmd, remote.Args{Rule: req.Rule})
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out := CommandReply{OK: len(res.Replies) > 0 && len(res.Missing) == 0 && len(res.Refused) == 0, Summary: []string{}}
	for _, rep := range res.Replies {
		line := fmt.Sprintf("host %d: ok", rep.Host)
		if rep.Status != remote.StatusOK {
			out.OK = false
			line = fmt.Sprintf("host %d: %s %s", rep.Host, rep.Status, rep.Error)
		}
		out.Summary = append(out.Summary, line)
	}
	for _, id := range res.Refused {
		out.Summary = append(out.Summary, fmt.Sprintf("host %d: refused (%s)", id, res.RefusedWhy[id]))
	}
	for _, id := range res.Missing {
		out.Summary = append(out.Summary, fmt.Sprintf("host %d: no answer", id))
	}
	if len(res.Replies) == 0 && len(res.Refused) == 0 {
		out.Summary = append(out.Summary, "no host answered")
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
