package agent

import (
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/health"
	"github.com/nlbproject/nlb/remote"
)

// Options are the agent's process-level settings (flags of nlbd).
type Options struct {
	// ConfigPath is re-read on reload.
	ConfigPath string
	// RunDir holds the NIC state file and the control socket (/run/nlb).
	RunDir string
	// BPFFS is where a bpffs is (or gets) mounted (/sys/fs/bpf); the
	// data plane is pinned under BPFFS/nlb/<interface>.
	BPFFS string
	Log   hclog.Logger
	// Ready, if set, is called once the host is on the wire (sd_notify).
	Ready func()
}

// FlapWindow is the agent's flap damping (convergence.Config.FlapWindow):
// a peer evicted again within 5 minutes of its last eviction is readmitted
// only after a hold-down of steady heartbeats (1 s, 2 s, 4 s … 30 s).
const FlapWindow = 5 * time.Minute

// ExitMode is how the agent leaves.
type ExitMode string

const (
	// ExitDrainStop drains, then leaves the cluster and restores the NIC.
	ExitDrainStop ExitMode = "drainstop"
	// ExitStop leaves at once (this host's connections end) and restores.
	ExitStop ExitMode = "stop"
	// ExitKeep exits leaving the data plane and NIC as they are: the
	// lease runs out on its own and a restarted agent adopts them.
	ExitKeep ExitMode = "keep"
)

// Agent is nlbd: one host's member of the cluster.
type Agent struct {
	opts Options
	log  hclog.Logger
	exit chan ExitMode

	mu     sync.Mutex // guards cfg, fstate, node
	cfg    *Resolved
	fstate filter.State // what the data plane holds (marks included)
	node   *Node
	egress filter.Egress
	dp     *filter.Datapath
	// gratuitous announces the VIPs (set once the ARP socket is open).
	gratuitous func() error
	srv        *remote.Server
	health     *health.Runner // nil without checks
	repins     atomic.Uint64  // data-plane pins restored by watchPins
	started    time.Time
	inc        uint64
}

// New returns an agent for a validated configuration; it touches nothing.
func New(cfg *Resolved, opts Options) *Agent {
	if opts.Log == nil {
		opts.Log = hclog.NewNullLogger()
	}
	if opts.RunDir == "" {
		opts.RunDir = "/run/nlb"
	}
	if opts.BPFFS == "" {
		opts.BPFFS = "/sys/fs/bpf"
	}
	return &Agent{opts: opts, log: opts.Log, cfg: cfg, exit: make(chan ExitMode, 1)}
}

// Exit asks a running agent to leave in the given way; Run then returns.
func (a *Agent) Exit(m ExitMode) {
	select {
	case a.exit <- m:
	default:
	}
}

// SocketPath is the local control socket of an agent with this run dir.
func SocketPath(runDir string) string { return filepath.Join(runDir, "nlbd.sock") }
