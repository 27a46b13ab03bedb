package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nlbproject/nlb/config"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/filter/datapath"
	"github.com/nlbproject/nlb/health"
	"github.com/nlbproject/nlb/heartbeat"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/macmode/nic"
	"github.com/nlbproject/nlb/remote"
)

func (a *Agent) stateFile() string {
	return filepath.Join(a.opts.RunDir, a.cfg.Interface+".state")
}

func (a *Agent) pinDir() string {
	return filepath.Join(a.opts.BPFFS, "nlb", a.cfg.Interface)
}

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
	return filter.State{VIPs: cfg.VIPs, Rules: cfg.Rules, Seed: cfg.Seed, RemotePort: cfg.RemotePort}
}

// compatible reports whether the data plane's installed state was made for
// the same cluster settings (its marks then mean the same buckets).
func compatible(installed *filter.State, want *filter.State) bool {
	return installed.Seed == want.Seed && installed.RemotePort == want.RemotePort &&
		slices.Equal(installed.VIPs, want.VIPs) && slices.Equal(installed.Rules, want.Rules)
}

// Run sets the host up, runs it until Exit or ctx ends, and leaves as
// asked (ctx ending is ExitKeep: the quickest exit that breaks nothing).
// Setup is all-or-nothing: on a setup error the host is left as it was.
func (a *Agent) Run(ctx context.Context) (err error) {
	cfg := a.cfg
	log := a.log
	a.started = time.Now()
	a.inc = uint64(a.started.UnixNano())
	link, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		return fmt.Errorf("host.interface %s: %w", cfg.Interface, err)
	}
	if err := os.MkdirAll(a.opts.RunDir, 0o700); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	var undo []func() error
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				if uerr := undo[i](); uerr != nil {
					log.Error("undo after failed setup", "error", uerr)
				}
			}
		}
	}()

	// 1. The data plane, before the NIC receives cluster traffic: a fresh
	// one drops every VIP flow until convergence gives this host buckets.
	mounted, err := datapath.EnsureBPFFS(a.opts.BPFFS)
	if err != nil {
		return err
	}
	if mounted {
		undo = append(undo, func() error { return unix.Unmount(a.opts.BPFFS, 0) })
	}
	dp, err := datapath.Load(datapath.DatapathOptions{PinDir: a.pinDir()})
	if err != nil {
		return err
	}
	want := baseState(cfg)
	var restoreMarks *[filter.MaxRules + 1]*filter.Marks
	var leaseLeft time.Duration
	if dp.Adopted() {
		inst, _, left, ierr := dp.Installed()
		if ierr == nil && compatible(inst, &want) {
			want.Marks = inst.Marks
			restoreMarks, leaseLeft = &inst.Marks, left
			log.Info("adopted the pinned data plane", "lease_left", left)
		} else {
			log.Warn("pinned data plane is for other cluster settings; starting with no buckets")
		}
		undo = append(undo, dp.Close)
	} else {
		undo = append(undo, dp.Detach)
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return err
	}
	clusterMAC, ownMAC, hbDst, err := clusterMACs(cfg, ifi.HardwareAddr)
	if err != nil {
		return err
	}
	eg := datapath.Egress{}
	if cfg.MACMode == macmode.Unicast {
		eg.Mask = true
		copy(eg.ClusterMAC[:], clusterMAC)
		copy(eg.MaskedMAC[:], ownMAC)
	}
	// Adopted marks are kept (with the current egress); a fresh data
	// plane starts with none and no lease.
	if err := dp.Update(&want, eg); err != nil {
		return err
	}
	if restoreMarks == nil {
		if err := dp.ExpireLease(); err != nil {
			return err
		}
	}
	if err := dp.Attach(link.Attrs().Index); err != nil {
		return err
	}
	a.mu.Lock()
	a.dp, a.fstate, a.egress = dp, want, eg
	a.mu.Unlock()

	// 2. The NIC.
	adopted, err := nic.Adopt(a.macConfig())
	if err != nil {
		return err
	}
	if !adopted {
		undo = append(undo, func() error { return nic.Restore(a.stateFile()) })
	}
	log.Info("cluster NIC ready", "interface", cfg.Interface, "mode", cfg.MACMode, "cluster_mac", clusterMAC.String(), "adopted", adopted)

	// 3. Heartbeats, ARP, remote control.
	conn, err := heartbeat.ListenPacket(cfg.Interface, hbDst)
	if err != nil {
		return err
	}
	undo = append(undo, conn.Close)
	arp, err := macmode.NewResponder(cfg.Interface, cfg.VIPs, clusterMAC)
	if err != nil {
		return err
	}
	undo = append(undo, arp.Close)
	a.gratuitous = arp.Gratuitous
	sock := remote.SocketPath(a.opts.RunDir)
	os.Remove(sock) // a killed agent's
	local, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	local.SetUnlinkOnClose(true)
	undo = append(undo, local.Close)
	if err := os.Chmod(sock, 0o600); err != nil {
		return err
	}
	var udp *net.UDPConn
	if cfg.RemotePort != 0 {
		udp, err = net.ListenUDP("udp4", &net.UDPAddr{Port: int(cfg.RemotePort)})
		if err != nil {
			return fmt.Errorf("remote control on udp/%d: %w", cfg.RemotePort, err)
		}
		undo = append(undo, udp.Close)
	}

	var metricsL net.Listener
	if cfg.MetricsAddr != "" {
		metricsL, err = net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics endpoint on %s: %w", cfg.MetricsAddr, err)
		}
		undo = append(undo, metricsL.Close)
	}

	// 4. Health checks: one probe each before joining, so that the host
	// joins with the rules whose service does not answer drained.
	mcfg := a.machineConfig(cfg, ownMAC)
	var hc *health.Runner
	if checks := cfg.HealthChecks(); len(checks) > 0 {
		hc = health.NewRunner(checks)
		for _, rule := range hc.Prime(ctx) {
			i, _ := cfg.RuleIndex(rule)
			mcfg.HealthDown = append(mcfg.HealthDown, i)
			log.Warn("health check failing at start: rule drained on this host", "rule", rule, "detail", hc.Status(rule).Detail)
		}
	}

	// 5. Convergence.
	m := convergence.NewMachine(mcfg)
	if restoreMarks != nil {
		m.Restore(time.Now(), *restoreMarks, leaseLeft)
	}
	hkey := heartbeat.DeriveKey(cfg.Key)
	node := NewNode(m, conn, heartbeat.NewGuard(hkey, cfg.VIPs[0], cfg.HostID), hkey, cfg.Period, log.Named("convergence"))
	node.Apply = a.apply
	node.Scan = a.scan
	node.OnState = a.onState
	a.mu.Lock()
	a.node, a.health = node, hc
	a.mu.Unlock()
	if err := arp.Gratuitous(); err != nil {
		log.Warn("gratuitous arp failed", "error", err)
	}
	undo = nil // from here on, leaving is the exit path's job

	srv := remote.NewServer(remote.DeriveKey(cfg.Key), a, log.Named("remote"))
	a.mu.Lock()
	a.srv = srv
	a.mu.Unlock()
	runCtx, stopRun := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return node.Run(gctx) })
	g.Go(func() error { return srv.ServeLocal(gctx, local) })
	if udp != nil {
		g.Go(func() error { return srv.ServeUDP(gctx, udp) })
	}
	if metricsL != nil {
		g.Go(func() error { return a.serveMetrics(gctx, metricsL) })
	}
	g.Go(func() error { a.watchPins(gctx, dp); return nil })
	if hc != nil {
		hc.OnChange = func(rule string, up bool, detail string) { a.healthChanged(gctx, node, rule, up, detail) }
		g.Go(func() error { hc.Run(gctx); return nil })
	}
	if cfg.MACMode != macmode.Unicast { // the kernel answers ARP in unicast mode
		g.Go(func() error {
			go func() { <-gctx.Done(); arp.Close() }()
			return arp.Run(gctx)
		})
	}
	log.Info("agent running", "host", cfg.HostID, "cluster", cfg.Name, "incarnation", a.inc, "remote_port", cfg.RemotePort)
	if a.opts.Ready != nil {
		a.opts.Ready()
	}

	mode := config.ExitKeep
	select {
	case mode = <-a.exit:
	case <-ctx.Done():
	case <-gctx.Done(): // a component failed
	}
	if gctx.Err() == nil {
		log.Info("agent leaving", "mode", mode)
		a.leave(ctx, node, mode)
	}
	stopRun()
	runErr := g.Wait()
	conn.Close()
	arp.Close()
	if runErr != nil {
		log.Error("agent component failed", "error", runErr)
		mode = config.ExitKeep // the lease protects the cluster; a restart adopts
	}
	if mode == config.ExitKeep {
		err = dp.Close()
		log.Info("agent exited; data plane and NIC kept for the next agent")
		return errors.Join(runErr, err)
	}
	// The NIC first, while the data plane still drops: once the programs
	// are gone, nothing may reach this host for the VIPs.
	err = errors.Join(runErr, nic.Restore(a.stateFile()), dp.Detach())
	if mounted {
		err = errors.Join(err, unix.Unmount(a.opts.BPFFS, 0))
	}
	log.Info("agent exited; NIC and data plane restored")
	return err
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
		HostID: cfg.HostID, Incarnation: a.inc, ClusterVIP: cfg.VIPs[0], MAC: mac,
		DedicatedIP: cfg.DedicatedIP.Addr(), Rules: cfg.Rules, ConfigDigest: cfg.Digest(),
		Settings: cfg.Settings(), Timing: cfg.Timing,
		Grace: cfg.Grace, DrainTimeout: cfg.DrainTimeout, QuorumVoters: cfg.QuorumVoters, StartState: st,
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
	if mode == config.ExitDrainStop {
		if err := node.Do(cctx, convergence.Command{Op: convergence.OpDrainStop}); err != nil {
			a.log.Warn("drainstop", "error", err)
		}
		t := time.NewTicker(a.cfg.Period)
		defer t.Stop()
	wait:
		for {
			if st, _ := node.State(); st != convergence.StateDraining {
				break
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
func (a *Agent) apply(action any) error {
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
	} else {
		a.log.Warn("health", "rule", rule, "status", "down", "detail", detail, "action", "rule drained on this host")
	}
	if err := node.Do(ctx, convergence.Command{Op: op, Rule: i}); err != nil && ctx.Err() == nil {
		a.log.Error("health: could not apply", "rule", rule, "error", err)
	}
}

// onState announces the VIPs when this host starts or stops serving.
func (a *Agent) onState(from, to convergence.State) {
	serving := func(s convergence.State) bool {
		return s == convergence.StateConverged || s == convergence.StateDefault || s == convergence.StateDraining
	}
	if serving(from) != serving(to) && a.gratuitous != nil {
		if err := a.gratuitous(); err != nil {
			a.log.Warn("gratuitous arp failed", "error", err)
		}
	}
}
