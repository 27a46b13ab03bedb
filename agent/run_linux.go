package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/filter/datapath"
	"github.com/nlbproject/nlb/health"
	"github.com/nlbproject/nlb/heartbeat"
	"github.com/nlbproject/nlb/internal/version"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/macmode/nic"
	"github.com/nlbproject/nlb/remote"
)

// session is one run of the agent: what setup opened, for serve and
// teardown.
type session struct {
	res      resources
	dp       *datapath.Datapath
	node     *Node
	arp      *macmode.Responder
	ndp      *macmode.NDPResponder // nil: unicast mode (the kernel answers), or no IPv6 VIP
	local    *net.UnixListener
	udp      []*net.UDPConn // none: remote control off
	metricsL net.Listener   // nil: no metrics endpoint
	health   *health.Runner
}

// Run sets the host up, serves until Exit or ctx ends, and leaves as
// asked (ctx ending is ExitKeep: the quickest exit that breaks nothing).
// Setup is all-or-nothing: on a setup error the host is left as it was.
func (a *Agent) Run(ctx context.Context) error {
	s, err := a.setup(ctx)
	if err != nil {
		return err
	}
	mode, runErr := a.serve(ctx, s)
	return a.teardown(s, mode, runErr)
}

// setup puts the host on the cluster: data plane, NIC, sockets, health
// checks and the convergence node, each pushed on s.res as it is done. On
// an error it unwinds what it did.
func (a *Agent) setup(ctx context.Context) (s *session, err error) {
	cfg, log := a.cfg, a.log
	a.started = time.Now()
	link, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("host.interface %s: %w", cfg.Interface, err)
	}
	if err := os.MkdirAll(a.opts.Layout.RunDir, 0o700); err != nil {
		return nil, fmt.Errorf("run directory: %w", err)
	}
	if err := os.MkdirAll(a.opts.Layout.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	a.votersEpoch, a.voters = readVoters(a.opts.Layout.VotersFile(cfg.Interface))
	if a.inc, a.prevInc, err = nextIncarnation(a.opts.Layout.IncarnationFile(cfg.Interface), a.started); err != nil {
		return nil, err
	}
	// The unwind uses its own reference: an error return sets the named
	// result s to nil.
	sess := &session{}
	s = sess
	defer func() {
		if err != nil {
			if uerr := sess.res.unwind(undoSetup); uerr != nil {
				log.Error("undo after failed setup", "error", uerr)
			}
		}
	}()

	// 1. The data plane, before the NIC receives cluster traffic: a fresh
	// one drops every VIP flow until convergence gives this host buckets.
	bpffs := a.opts.Layout.BPFFS
	mounted, err := datapath.EnsureBPFFS(bpffs)
	if err != nil {
		return nil, err
	}
	if mounted {
		s.res.push(resource{name: "bpffs " + bpffs, remove: func() error { return unix.Unmount(bpffs, 0) }})
	}
	dp, err := datapath.Load(datapath.DatapathOptions{PinDir: a.pinDir()})
	if err != nil {
		return nil, err
	}
	s.dp = dp
	s.res.push(resource{name: "data plane", release: dp.Close, remove: dp.Detach, adopted: dp.Adopted()})
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
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, err
	}
	clusterMAC, ownMAC, hbDst, err := clusterMACs(cfg, ifi.HardwareAddr)
	if err != nil {
		return nil, err
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
		return nil, err
	}
	if restoreMarks == nil {
		if err := dp.ExpireLease(); err != nil {
			return nil, err
		}
	}
	if err := dp.Attach(link.Attrs().Index); err != nil {
		return nil, err
	}
	a.mu.Lock()
	a.dp, a.fstate, a.egress = dp, want, eg
	a.mu.Unlock()

	// 2. The NIC. Taken off last at exit, while the data plane still
	// drops: once the programs are gone, nothing may reach this host for
	// the VIPs.
	adopted, err := nic.Adopt(a.macConfig())
	if err != nil {
		return nil, err
	}
	s.res.push(resource{name: "NIC " + cfg.Interface, remove: func() error { return nic.Restore(a.stateFile(), a.cfg.Interface) }, adopted: adopted})
	log.Info("cluster NIC ready", "interface", cfg.Interface, "mode", cfg.MACMode, "cluster_mac", clusterMAC.String(), "adopted", adopted)

	// 3. Heartbeats, ARP, remote control, metrics.
	conn, err := heartbeat.ListenPacket(cfg.Interface, hbDst)
	if err != nil {
		return nil, err
	}
	s.res.push(resource{name: "heartbeat socket", release: conn.Close})
	if s.arp, err = macmode.NewResponder(cfg.Interface, cfg.VIPs, clusterMAC); err != nil {
		return nil, err
	}
	s.res.push(resource{name: "arp socket", release: s.arp.Close})
	a.gratuitous, a.solicit = s.arp.Gratuitous, s.arp.Solicit
	if vips6 := slices.DeleteFunc(slices.Clone(cfg.VIPs), netip.Addr.Is4); len(vips6) > 0 && cfg.MACMode != macmode.Unicast {
		mac6 := clusterMAC
		if cfg.MACMode == macmode.IGMP {
			if mac6, err = macmode.IGMPMAC6(cfg.VIPs[0]); err != nil {
				return nil, err
			}
		}
		if s.ndp, err = macmode.NewNDPResponder(cfg.Interface, vips6, mac6); err != nil {
			return nil, err
		}
		s.res.push(resource{name: "ndp socket", release: s.ndp.Close})
		a.gratuitous = func() error { return errors.Join(s.arp.Gratuitous(), s.ndp.Unsolicited()) }
	}
	sock := a.opts.Layout.Socket()
	os.Remove(sock) // a killed agent's
	if s.local, err = net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"}); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s.local.SetUnlinkOnClose(true)
	s.res.push(resource{name: "control socket", release: closer(s.local)})
	if err := os.Chmod(sock, 0o600); err != nil {
		return nil, err
	}
	if cfg.RemotePort != 0 {
		// One socket per address this host serves (its VIPs and its
		// dedicated IP), none on the wildcard: the host answers only
		// where the cluster is reached.
		for _, addr := range servedAddrs(cfg) {
			u, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, cfg.RemotePort)))
			if err != nil {
				return nil, fmt.Errorf("remote control on %v:%d: %w", addr, cfg.RemotePort, err)
			}
			s.udp = append(s.udp, u)
			s.res.push(resource{name: "remote control socket " + addr.String(), release: closer(u)})
		}
	}
	if cfg.MetricsAddr != "" {
		if exposedBind(cfg.MetricsAddr) {
			log.Warn("metrics endpoint listens beyond loopback: anyone who can connect reads the cluster's state", "address", cfg.MetricsAddr)
		}
		if s.metricsL, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("metrics endpoint on %s: %w", cfg.MetricsAddr, err)
		}
		s.res.push(resource{name: "metrics listener", release: closer(s.metricsL)})
	}

	// 4. Health checks: one probe each before joining, so that the host
	// joins with the rules whose service does not answer drained.
	mcfg := a.machineConfig(cfg, ownMAC)
	if checks := cfg.HealthChecks(); len(checks) > 0 {
		s.health = health.NewRunner(checks)
		for _, rule := range s.health.Prime(ctx) {
			i, _ := cfg.RuleIndex(rule)
			mcfg.HealthDown = append(mcfg.HealthDown, i)
			log.Warn("health check failing at start: rule drained on this host", "rule", rule, "detail", s.health.Status(rule).Detail)
		}
	}

	// 5. Convergence, in the operator state retained from the last run
	// (host.retain_state) or else the configured initial state.
	startedAs := "host.initial_state " + string(cfg.InitialState)
	if rpath := a.opts.Layout.RetainedFile(cfg.Interface); cfg.RetainState {
		r, ok, rerr := readRetained(rpath)
		switch {
		case rerr != nil:
			log.Warn("host.retain_state: the retained state is unreadable; starting as host.initial_state says", "error", rerr)
			startedAs += " (retained state unreadable)"
		case ok:
			if unknown := r.apply(cfg, &mcfg); len(unknown) > 0 {
				log.Warn("host.retain_state: retained rules no longer configured, ignored", "rules", unknown)
			}
			log.Info("retained operator state restored", "state", r.State, "rules", r.Rules, "by", r.By, "saved", r.Saved)
			startedAs = "retained state " + r.State
			if len(r.Rules) > 0 {
				startedAs += fmt.Sprintf(", rules %v", r.Rules)
			}
		}
	} else if err := os.Remove(rpath); err == nil {
		log.Info("host.retain_state is off: removed the retained state", "path", rpath)
	}
	m := convergence.NewMachine(mcfg)
	if restoreMarks != nil {
		m.Restore(time.Now(), *restoreMarks, leaseLeft)
	}
	hkeys := cfg.Keys.Heartbeat()
	guard := heartbeat.NewGuard(hkeys, macmode.ClusterID(cfg.VIPs[0]), cfg.HostID)
	guard.SetOwnIncarnation(a.inc)
	s.node = NewNode(m, conn, guard, hkeys[0], cfg.Period, log.Named("convergence"))
	s.node.Apply = a.apply
	s.node.Scan = a.scan
	s.node.OnState = a.onState
	s.node.Bind = a.dp.BindHeartbeatSource
	s.node.OnNotice = func(n convergence.Notice) { a.event(string(n.Kind), n.Host, n.Msg, "") }
	srv := remote.NewServer(cfg.Keys.Remote(), remote.Local{Addrs: servedAddrs(cfg), HostID: cfg.HostID}, a.started, a, log.Named("remote"))
	srv.OnRefusal = func(src netip.Addr, why remote.Refusal, more uint64) {
		a.event("refusal", cfg.HostID, fmt.Sprintf("remote request refused: %s (%d more since the last report)", why, more), src.String())
	}
	a.event("agent", cfg.HostID, fmt.Sprintf("started %s, incarnation %d, in %s", version.String(), a.inc, startedAs), "")
	a.mu.Lock()
	a.node, a.health, a.srv = s.node, s.health, srv
	a.mu.Unlock()
	if err := a.gratuitous(); err != nil {
		log.Warn("gratuitous arp failed", "error", err)
	}
	return s, nil
}

// serve runs the components until Exit, ctx's end or a component's
// failure, and carries out a stop or drainstop if one was asked. It
// returns how to leave and the first component error.
func (a *Agent) serve(ctx context.Context, s *session) (config.ExitMode, error) {
	cfg, log := a.cfg, a.log
	runCtx, stopRun := context.WithCancel(context.Background())
	defer stopRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return s.node.Run(gctx) })
	g.Go(func() error { return a.srv.ServeLocal(gctx, s.local) })
	for _, u := range s.udp {
		g.Go(func() error { return a.srv.ServeUDP(gctx, u) })
	}
	if s.metricsL != nil {
		g.Go(func() error { return a.serveMetrics(gctx, s.metricsL) })
	}
	g.Go(func() error { a.watchPins(gctx, s.dp); return nil })
	g.Go(func() error { a.hooks.run(gctx); return nil })
	g.Go(func() error { a.runBGP(gctx, s.node); return nil })
	if s.health != nil {
		s.health.OnChange = func(rule string, up bool, detail string) { a.healthChanged(gctx, s.node, rule, up, detail) }
		g.Go(func() error { s.health.Run(gctx); return nil })
	}
	if cfg.MACMode != macmode.Unicast { // the kernel answers ARP in unicast mode
		g.Go(func() error {
			go func() { <-gctx.Done(); s.arp.Close() }()
			return s.arp.Run(gctx)
		})
	}
	if s.ndp != nil {
		g.Go(func() error { return s.ndp.Run(gctx) })
	}
	log.Info("agent running", "host", cfg.HostID, "cluster", cfg.Name, "incarnation", a.inc, "remote_port", cfg.RemotePort)
	a.notify("READY=1\nSTATUS=" + statusLine(s.node.Status()))
	if a.opts.Watchdog > 0 {
		g.Go(func() error { a.watchdog(gctx, s.node); return nil })
	}

	mode := config.ExitKeep
	select {
	case mode = <-a.exit:
	case <-ctx.Done():
	case <-gctx.Done(): // a component failed
	}
	if gctx.Err() == nil {
		log.Info("agent leaving", "mode", mode)
		a.leave(ctx, s.node, mode)
	}
	stopRun()
	runErr := g.Wait()
	if runErr != nil {
		log.Error("agent component failed", "error", runErr)
		mode = config.ExitKeep // the lease protects the cluster; a restart adopts
	}
	return mode, runErr
}

// teardown unwinds the session's resources as mode says: keep lets go of
// them and leaves the data plane and NIC for the next agent; stop and
// drainstop take everything off the host.
func (a *Agent) teardown(s *session, mode config.ExitMode, runErr error) error {
	if mode == config.ExitKeep {
		err := s.res.unwind(leaveKeep)
		a.log.Info("agent exited; data plane and NIC kept for the next agent")
		return joinErr(runErr, err)
	}
	err := s.res.unwind(leaveRemove)
	a.log.Info("agent exited; NIC and data plane restored")
	return joinErr(runErr, err)
}

func joinErr(a, b error) error {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	return fmt.Errorf("%w; and at exit: %w", a, b)
}

// closer closes c, which a server may have closed already when its
// context ended.
func closer(c io.Closer) func() error {
	return func() error {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	}
}

// servedAddrs are the addresses remote control is served on: the VIPs and
// the dedicated IP.
func servedAddrs(cfg *config.Resolved) []netip.Addr {
	out := append(slices.Clone(cfg.VIPs), cfg.DedicatedIP.Addr())
	if cfg.DedicatedIP6.IsValid() {
		out = append(out, cfg.DedicatedIP6.Addr())
	}
	return out
}
