package agent

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nlbproject/nlb/bgp"
	"github.com/nlbproject/nlb/config"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/filter/datapath"
	"github.com/nlbproject/nlb/health"
	"github.com/nlbproject/nlb/remote"
)

// Options are the agent's process-level settings (flags of nlbd).
type Options struct {
	// ConfigPath is re-read on reload.
	ConfigPath string
	// Layout says where the agent's files are (run directory, bpffs).
	Layout Layout
	Log    hclog.Logger
	// Notify, if set, sends sd_notify(3) states to the supervisor:
	// READY=1 once the host is on the wire, STATUS= at every state
	// change, RELOADING=1 and READY=1 around a reload, STOPPING=1 and
	// EXTEND_TIMEOUT_USEC= while leaving, WATCHDOG=1 (see Watchdog).
	Notify func(state string)
	// Watchdog, if positive, is systemd's WatchdogSec: the agent sends
	// WATCHDOG=1 every Watchdog/2 while its convergence loop is stepping
	// (a stuck loop stops the pings, and systemd restarts the agent,
	// which adopts the data plane).
	Watchdog time.Duration
}

// notify sends an sd_notify state if a supervisor listens.
func (a *Agent) notify(state string) {
	if a.opts.Notify != nil {
		a.opts.Notify(state)
	}
}

// statusLine is systemd's STATUS= for the node's snapshot: state, epoch,
// members ("converged, epoch 12, members 1,2,3").
func statusLine(st Status) string {
	s := st.State.String()
	if st.Epoch != nil {
		s += fmt.Sprintf(", epoch %d, members %s", st.Epoch.Num, joinIDs(members(st.Epoch.Members)))
	}
	return s
}

func joinIDs(ids []uint8) string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strconv.Itoa(int(id))
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ",")
}

// FlapWindow is the agent's flap damping (convergence.Config.FlapWindow):
// a peer evicted again within 5 minutes of its last eviction is readmitted
// only after a hold-down of steady heartbeats (1 s, 2 s, 4 s … 30 s).
const FlapWindow = 5 * time.Minute

// Agent is nlbd: one host's member of the cluster.
type Agent struct {
	opts Options
	log  hclog.Logger
	exit chan config.ExitMode

	mu     sync.Mutex // guards cfg, fstate, node
	cfg    *config.Resolved
	fstate filter.State // what the data plane holds (marks included)
	node   *Node
	egress datapath.Egress
	dp     *datapath.Datapath
	// gratuitous announces the VIPs and solicit asks a router for its MAC
	// from a VIP (set once the ARP socket is open).
	gratuitous func() error
	solicit    func(target, from netip.Addr) error
	srv        *remote.Server
	health     *health.Runner // nil without checks
	repins     atomic.Uint64  // data-plane pins restored by watchPins
	started    time.Time
	inc        uint64 // at start (the node's status has the current one)
	prevInc    uint64 // the incarnation recorded before this start
	// voters, agreed in votersEpoch: the voter set recorded before this
	// start.
	voters, votersEpoch uint64
	// convHist holds every convergence's duration; convSeen is how many
	// it has (onState, from the node's loop).
	convHist prometheus.Histogram
	convSeen uint64
	// events is the host's event history; hooks runs host.notify on
	// each.
	events *eventRing
	hooks  *hookRunner
	// speaker is the BGP speaker (nil without host.bgp).
	speaker *bgp.Speaker
}

// event records an event in the history (and hands it to the notify
// hook).
func (a *Agent) event(kind string, host uint8, detail, source string) {
	a.events.add(time.Now(), kind, host, detail, source)
}

// hookConfig is host.notify as the running configuration has it.
func (a *Agent) hookConfig() (*config.Notify, hookEnv) {
	a.mu.Lock()
	cfg, node := a.cfg, a.node
	a.mu.Unlock()
	env := hookEnv{cluster: cfg.Name, hostID: cfg.HostID, state: func() string {
		if node == nil {
			return "starting"
		}
		return node.Status().State.String()
	}}
	return cfg.Notify, env
}

// New returns an agent for a validated configuration; it touches nothing.
func New(cfg *config.Resolved, opts Options) *Agent {
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	opts.Layout = opts.Layout.withDefaults()
	a := &Agent{opts: opts, log: opts.Log, cfg: cfg, exit: make(chan config.ExitMode, 1),
		convHist: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "nlb_convergence_duration_seconds",
			Help:    "How long each convergence took, from converging to converged.",
			Buckets: []float64{0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30}}),
		events: newEventRing(time.Now())}
	a.hooks = newHookRunner(a.hookConfig, opts.Log.Named("notify"))
	// A hook's own failures are logged and counted, not fed back to it.
	a.events.sink = a.hooks.enqueue
	return a
}

// Exit asks a running agent to leave in the given way; Run then returns.
func (a *Agent) Exit(m config.ExitMode) {
	select {
	case a.exit <- m:
	default:
	}
}
