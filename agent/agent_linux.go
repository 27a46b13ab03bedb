package agent

import (
	"golang.org/x/sys/unix"

	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/nlbproject/nlb/config"

	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/filter/datapath"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/macmode/nic"
)

func (a *Agent) stateFile() string { return a.opts.Layout.StateFile(a.cfg.Interface) }

func (a *Agent) pinDir() string { return a.opts.Layout.PinDir(a.cfg.Interface) }

func (a *Agent) macConfig() nic.Config {
	return nic.Config{Mode: a.cfg.MACMode, Interface: a.cfg.Interface,
		VIPs: a.cfg.VIPs, StateFile: a.stateFile()}
}

// clusterMACs returns the MAC the cluster answers ARP with, this host's
// unique MAC, and the heartbeat destination.
func clusterMACs(cfg *config.Resolved, nicMAC net.HardwareAddr) (cluster, own, hbDst net.HardwareAddr, err error) {
	vip := cfg.VIPs[0]
	switch cfg.MACMode {
	case macmode.Unicast:
		if cluster, err = macmode.UnicastMAC(vip); err != nil {
			return
		}
		own, err = macmode.MaskedMAC(vip, cfg.HostID)
		hbDst = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	case macmode.Multicast:
		cluster, err = macmode.MulticastMAC(vip)
		own, hbDst = nicMAC, cluster
	case macmode.IGMP:
		cluster, err = macmode.IGMPMAC(vip)
		own, hbDst = nicMAC, cluster
	default:
		err = fmt.Errorf("mac mode %v", cfg.MACMode)
	}
	return
}

// baseState is the filter state of cfg with no marks.
func baseState(cfg *config.Resolved) filter.State {
	return filter.State{VIPs: cfg.VIPs, Rules: cfg.Rules, Seed: cfg.Seed, RemotePort: cfg.RemotePort,
		HeartbeatBudget: cfg.Budget(len(cfg.Rules)), Prefix6: uint8(cfg.Prefix6)}
}

// compatible reports whether the data plane's installed state was made for
// the same cluster settings (its marks then mean the same buckets).
func compatible(installed *filter.State, want *filter.State) bool {
	return installed.Seed == want.Seed && installed.RemotePort == want.RemotePort && installed.Prefix6 == want.Prefix6 &&
		slices.Equal(installed.VIPs, want.VIPs) && slices.Equal(installed.Rules, want.Rules)
}

func (a *Agent) machineConfig(cfg *config.Resolved, ownMAC net.HardwareAddr) convergence.Config {
	var mac [6]byte
	copy(mac[:], ownMAC)
	st := convergence.StateJoining
	switch cfg.InitialState {
	case config.StartStopped:
		st = convergence.StateStopped
	case config.StartSuspended:
		st = convergence.StateSuspended
	}
	return convergence.Config{
		HostID: cfg.HostID, Incarnation: a.inc, PrevIncarnation: a.prevInc, ClusterVIP: macmode.ClusterID(cfg.VIPs[0]), MAC: mac,
		DedicatedIP: cfg.DedicatedIP.Addr(), Rules: cfg.Rules, ConfigDigest: cfg.Digest(),
		Settings: cfg.Settings(), Timing: cfg.Timing,
		Grace: cfg.Grace, DrainTimeout: cfg.DrainTimeout, Quorum: cfg.Quorum, QuorumVoters: cfg.QuorumVoters, Voters: a.voters, VotersEpoch: a.votersEpoch, StartState: st,
		FlapWindow: FlapWindow,
	}
}

// leave carries out a stop or drainstop before the exit (keep does
// nothing: the lease runs out by itself).
func (a *Agent) leave(ctx context.Context, node *Node, mode config.ExitMode) {
	if mode == config.ExitKeep {
		return
	}
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a.notify("STOPPING=1\nSTATUS=leaving: " + string(mode))
	if mode == config.ExitDrainStop {
		if err := node.Do(cctx, convergence.Command{Op: convergence.OpDrainStop}); err != nil {
			a.log.Warn("drainstop", "error", err)
		}
		t := time.NewTicker(a.cfg.Period)
		defer t.Stop()
		var extended time.Time
	wait:
		for {
			if st, _ := node.State(); st != convergence.StateDraining {
				break
			}
			// A drain may outlast the unit's TimeoutStopSec: ask
			// systemd for more time while it makes progress (it ends
			// by the drain timeout anyway).
			if time.Since(extended) >= time.Second {
				a.notify(fmt.Sprintf("EXTEND_TIMEOUT_USEC=%d", (5 * time.Second).Microseconds()))
				extended = time.Now()
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				a.log.Warn("drain interrupted")
				break wait
			}
		}
	}
	if err := node.Do(cctx, convergence.Command{Op: convergence.OpStop}); err != nil {
		a.log.Warn("stop", "error", err)
	}
	// Let the peers hear that this host stopped: they re-converge at once
	// instead of waiting for it to be declared dead.
	time.Sleep(2 * a.cfg.Period)
}

// apply carries a machine action into the kernel.
func (a *Agent) apply(action convergence.Action) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch ac := action.(type) {
	case convergence.InstallMarks:
		a.fstate.Marks = ac.Marks
		return a.dp.Update(&a.fstate, a.egress)
	case convergence.Lease:
		if ac.For == 0 {
			a.fstate.LeaseValid = false
			return a.dp.ExpireLease()
		}
		a.fstate.LeaseValid = true
		return a.dp.RenewLease(ac.For)
	case convergence.Voters:
		return recordVoters(a.opts.Layout.VotersFile(a.cfg.Interface), ac.Epoch, ac.Set)
	case convergence.Reincarnate:
		return recordIncarnation(a.opts.Layout.IncarnationFile(a.cfg.Interface), ac.Incarnation)
	}
	return nil
}

// watchPins re-pins, once a second, whatever part of the data plane lost
// its pin under the running agent, and says so loudly: without the pins
// the filter would vanish with this process, and a restart would start
// from nothing instead of adopting it.
func (a *Agent) watchPins(ctx context.Context, dp *datapath.Datapath) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		names, err := dp.Repin()
		if len(names) > 0 {
			a.repins.Add(uint64(len(names)))
			a.log.Warn("data plane pins were removed under the running agent; pinned again", "pins", names, "dir", a.pinDir())
		}
		if err != nil {
			a.log.Error("data plane pins missing and cannot be restored: a restart will not adopt this data plane", "error", err)
		}
	}
}

// healthChanged drains a rule on this host when its check goes down and
// ends that when it comes back up; the cluster reconverges as for an
// operator's drain.
func (a *Agent) healthChanged(ctx context.Context, node *Node, rule string, up bool, detail string) {
	a.mu.Lock()
	cfg := a.cfg
	a.mu.Unlock()
	i, err := cfg.RuleIndex(rule)
	if err != nil {
		return
	}
	op := convergence.OpHealthDown
	if up {
		op = convergence.OpHealthUp
		a.log.Info("health", "rule", rule, "status", "up", "action", "rule enabled on this host")
		a.event("health", cfg.HostID, "rule "+rule+" up: enabled on this host", "")
	} else {
		a.log.Warn("health", "rule", rule, "status", "down", "detail", detail, "action", "rule drained on this host")
		a.event("health", cfg.HostID, "rule "+rule+" down ("+detail+"): drained on this host", "")
	}
	if err := node.Do(ctx, convergence.Command{Op: op, Rule: i}); err != nil && ctx.Err() == nil {
		a.log.Error("health: could not apply", "rule", rule, "error", err)
	}
}

// watchdog pings systemd's watchdog every Watchdog/2 while the node's
// loop steps (it steps at least every heartbeat period).
func (a *Agent) watchdog(ctx context.Context, node *Node) {
	t := time.NewTicker(a.opts.Watchdog / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if now.Sub(node.LastStep()) < a.opts.Watchdog/2 {
				a.notify("WATCHDOG=1")
			} else {
				a.log.Error("watchdog: the convergence loop has not stepped", "since", now.Sub(node.LastStep()).Round(time.Millisecond))
			}
		}
	}
}

// onState announces the VIPs when this host starts or stops serving, and
// tells systemd the new state (STATUS=).
func (a *Agent) onState(from, to convergence.State) {
	a.mu.Lock()
	node := a.node
	a.mu.Unlock()
	if node != nil {
		st := node.Status()
		a.notify("STATUS=" + statusLine(st))
		if st.Convergences > a.convSeen {
			a.convSeen = st.Convergences
			a.convHist.Observe(st.LastConvergence.Seconds())
		}
	}
	serving := func(s convergence.State) bool {
		return s == convergence.StateConverged || s == convergence.StateDefault || s == convergence.StateDraining
	}
	if serving(from) != serving(to) && a.gratuitous != nil {
		if err := a.gratuitous(); err != nil {
			a.log.Warn("gratuitous arp failed", "error", err)
		}
	}
}

// monotonicUsec is CLOCK_MONOTONIC in µs, for sd_notify's MONOTONIC_USEC.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) != nil {
		return 0
	}
	return ts.Nano() / 1000
}
