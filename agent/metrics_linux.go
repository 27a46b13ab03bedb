package agent

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/filter/datapath"
	"github.com/nlbproject/nlb/heartbeat"
	"github.com/nlbproject/nlb/internal/version"
	"github.com/nlbproject/nlb/remote"
)

// The agent's metrics are read from their sources at scrape time (kernel
// counters, the node's status, the guards' counters): nothing is counted
// twice, and a scrape shows the same figures as nlbctl query.
var (
	descPackets = prometheus.NewDesc("nlb_packets_total",
		"Packets the data plane decided, per rule (\"default\": VIP traffic matching no rule; \"none\": not VIP traffic) and reason.",
		[]string{"rule", "verdict", "reason"}, nil)
	descBytes = prometheus.NewDesc("nlb_bytes_total",
		"Bytes (as the frame's length at ingress) of the packets the data plane decided, per rule, verdict and reason.",
		[]string{"rule", "verdict", "reason"}, nil)
	descNotify = prometheus.NewDesc("nlb_notify_runs_total",
		"Runs of host.notify's command, by result: ok, failed (non-zero exit, or no start), timeout (killed), dropped (queue full).",
		[]string{"result"}, nil)
	descBGPSession = prometheus.NewDesc("nlb_bgp_session_up",
		"1 while the BGP session with the router is established (host.bgp).", []string{"peer"}, nil)
	descBGPRoutes = prometheus.NewDesc("nlb_bgp_announced_routes",
		"VIP routes this host announces to its routers now (0: withdrawn; nlbctl query says why).", nil, nil)
	descEvents = prometheus.NewDesc("nlb_events_total",
		"Events recorded in the host's event history since the agent started (nlbctl events).", nil, nil)
	descBuckets = prometheus.NewDesc("nlb_buckets",
		"Buckets per rule and handoff mark: owned and dirty take new flows; retained ones only carry flows this host holds.",
		[]string{"rule", "mark"}, nil)
	descState = prometheus.NewDesc("nlb_state",
		"1 for the host's current state.", []string{"state"}, nil)
	descEpoch = prometheus.NewDesc("nlb_epoch",
		"Number of the membership epoch in force.", nil, nil)
	descMembers = prometheus.NewDesc("nlb_members",
		"Hosts in the epoch in force.", nil, nil)
	descConvergences = prometheus.NewDesc("nlb_convergences_total",
		"Convergences completed since the agent started.", nil, nil)
	descLastConv = prometheus.NewDesc("nlb_last_convergence_seconds",
		"Duration of the last convergence.", nil, nil)
	descLease = prometheus.NewDesc("nlb_lease_valid",
		"1 while the data plane's lease lets it take new flows.", nil, nil)
	descHBSent = prometheus.NewDesc("nlb_heartbeat_frames_sent_total",
		"Heartbeat frames sent.", nil, nil)
	descHBRecv = prometheus.NewDesc("nlb_heartbeat_frames_received_total",
		"Authenticated heartbeat frames accepted, per sending host.", []string{"peer"}, nil)
	descHBRefused = prometheus.NewDesc("nlb_heartbeat_frames_refused_total",
		"Heartbeat frames dropped, per reason (a refused frame's sender is not authenticated, so it is not a label).",
		[]string{"reason"}, nil)
	descHBUnverified = prometheus.NewDesc("nlb_heartbeat_frames_unverified_total",
		"Authentic heartbeats not admitted because they did not echo this host's incarnation (a peer that has not heard it yet, or a replay).", nil, nil)
	descHBOverflow = prometheus.NewDesc("nlb_heartbeat_inbox_overflow_total",
		"Heartbeat frames dropped because the agent's inbox was full.", nil, nil)
	descHBLost = prometheus.NewDesc("nlb_heartbeat_frames_lost_total",
		"Heartbeat frames lost before the agent read them: the socket's buffer was full (kernel drops), or not valid Ethernet.", nil, nil)
	descRemote = prometheus.NewDesc("nlb_remote_requests_total",
		"Remote-control requests answered, per command and outcome (ok, failed).",
		[]string{"command", "outcome"}, nil)
	descRemoteRefused = prometheus.NewDesc("nlb_remote_refused_total",
		"Remote-control datagrams refused, per reason.", []string{"reason"}, nil)
	descHealth = prometheus.NewDesc("nlb_health_check_up",
		"1 while a rule's health check passes (after rise), 0 while it fails (after fall).",
		[]string{"rule", "check"}, nil)
	descHealthRuns = prometheus.NewDesc("nlb_health_checks_total",
		"Health-check runs per rule and result.", []string{"rule", "result"}, nil)
	descRepins = prometheus.NewDesc("nlb_datapath_repins_total",
		"Data-plane pins (maps, links) found removed under the running agent and pinned again.", nil, nil)
	descScrapeErr = prometheus.NewDesc("nlb_scrape_error",
		"1 when this scrape could not read the kernel counters.", nil, nil)
	descPeerUp = prometheus.NewDesc("nlb_peer_up",
		"1 while this host hears the peer (its heartbeats admitted within the dead-after time), 0 for a member or recently heard peer it does not hear.",
		[]string{"peer"}, nil)
	descBuildInfo = prometheus.NewDesc("nlb_build_info",
		"Always 1: the agent's version and the Go release it was built with.", []string{"version", "goversion"}, nil)
)

type collector struct{ a *Agent }

// allDescs lists every metric the collector exports.
var allDescs = []*prometheus.Desc{descPackets, descBuckets, descState, descEpoch, descMembers,
	descConvergences, descLastConv, descLease, descHBSent, descHBRecv, descHBRefused, descHBOverflow, descHBUnverified, descHBLost,
	descRemote, descRemoteRefused, descHealth, descHealthRuns, descRepins, descScrapeErr, descBuildInfo, descPeerUp,
	descBytes, descNotify, descEvents, descBGPSession, descBGPRoutes}

// Describe sends every descriptor: the set is fixed, whatever a scrape
// finds.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	c.describeAll(ch)
	if c.a.convHist != nil {
		c.a.convHist.Describe(ch)
	}
}

func (collector) describeAll(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	a := c.a
	a.mu.Lock()
	cfg, node, fst, srv, dp, hc := a.cfg, a.node, a.fstate, a.srv, a.dp, a.health
	a.mu.Unlock()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	rule := func(t int) string {
		if t == datapath.NoTable {
			return "none"
		}
		return a.ruleName(cfg, t)
	}
	tables := func(yield func(int) bool) {
		for t := range cfg.Rules {
			if !yield(t) {
				return
			}
		}
		yield(filter.DefaultRule)
	}

	gauge(descBuildInfo, 1, version.String(), version.Go())
	for _, r := range hookResults {
		counter(descNotify, a.hooks.Runs(r), r)
	}
	counter(descEvents, a.events.last())
	a.mu.Lock()
	sp := a.speaker
	a.mu.Unlock()
	if sp != nil {
		bs := sp.Status()
		for peer, st := range bs.Peers {
			up := 0.0
			if st == "established" {
				up = 1
			}
			gauge(descBGPSession, up, peer)
		}
		gauge(descBGPRoutes, float64(len(bs.Announced)))
	}
	if a.convHist != nil {
		a.convHist.Collect(ch)
	}
	if dp != nil {
		cs, err := dp.Counters()
		scrapeErr := 0.0
		if err != nil {
			a.log.Warn("metrics: kernel counters", "error", err)
			scrapeErr = 1
		} else {
			for t := range cs.Packets {
				if t < filter.MaxRules && t >= len(cfg.Rules) {
					continue
				}
				for r, n := range cs.Packets[t] {
					reason := filter.Reason(r)
					if reason == filter.ReasonInvalid || (n == 0 && !interesting(t, reason)) {
						continue
					}
					counter(descPackets, n, rule(t), reason.Verdict().String(), reason.String())
					if n > 0 {
						counter(descBytes, cs.Bytes[t][r], rule(t), reason.Verdict().String(), reason.String())
					}
				}
			}
		}
		gauge(descScrapeErr, scrapeErr)
	}
	for t := range tables {
		var per [4]int
		if m := fst.Marks[t]; m != nil {
			for _, k := range m {
				if int(k) < len(per) {
					per[k]++
				}
			}
		}
		for _, k := range []filter.Mark{filter.MarkOwned, filter.MarkDirty, filter.MarkRetained} {
			gauge(descBuckets, float64(per[k]), rule(t), k.String())
		}
	}
	if fst.LeaseValid {
		gauge(descLease, 1)
	} else {
		gauge(descLease, 0)
	}
	if node != nil {
		st := node.Status()
		for _, s := range convergence.States() {
			v := 0.0
			if s == st.State {
				v = 1
			}
			gauge(descState, v, s.String())
		}
		if st.Epoch != nil {
			gauge(descEpoch, float64(st.Epoch.Num))
			gauge(descMembers, float64(len(members(st.Epoch.Members))))
		}
		counter(descConvergences, st.Convergences)
		gauge(descLastConv, st.LastConvergence.Seconds())
		peers := st.Heard
		if st.Epoch != nil {
			peers |= st.Epoch.Members
		}
		for id := range st.Silent {
			peers |= 1 << (id - 1)
		}
		for _, id := range members(peers &^ (1 << (cfg.HostID - 1))) {
			up := 0.0
			if st.Heard&(1<<(id-1)) != 0 {
				up = 1
			}
			gauge(descPeerUp, up, strconv.Itoa(int(id)))
		}
		counter(descHBSent, node.FramesSent())
		for id := uint8(1); id <= filter.MaxHostID; id++ {
			if n := node.FramesReceived(id); n > 0 {
				counter(descHBRecv, n, strconv.Itoa(int(id)))
			}
		}
		for r, n := range node.FramesRefused() {
			if d := heartbeat.Drop(r); d != heartbeat.DropNone {
				counter(descHBRefused, n, d.String())
			}
		}
		counter(descHBOverflow, st.Overflow)
		counter(descHBUnverified, st.Unverified)
		counter(descHBLost, node.FramesLost())
	}
	if srv != nil {
		for cmd := remote.Command(1); cmd.Valid(); cmd++ {
			for _, o := range []remote.Status{remote.StatusOK, remote.StatusFailed} {
				if n := srv.Replies(cmd, o); n > 0 {
					counter(descRemote, n, cmd.String(), o.String())
				}
			}
		}
		for r, n := range srv.Guard().Counts() {
			if rf := remote.Refusal(r); rf != remote.RefusedNone {
				counter(descRemoteRefused, n, rf.String())
			}
		}
	}
	counter(descRepins, a.repins.Load())
	if hc != nil {
		for _, s := range hc.Snapshot() {
			up := 0.0
			if s.Up {
				up = 1
			}
			gauge(descHealth, up, s.Rule, s.Kind)
			counter(descHealthRuns, s.Passed, s.Rule, "pass")
			counter(descHealthRuns, s.Failed, s.Rule, "fail")
		}
	}
}

// packetTotals sums the VIP packets accepted and dropped over all rules.
// ruleTotals returns per table the packets accepted and dropped and the
// bytes accepted since the data plane was loaded.
func (a *Agent) ruleTotals() (t [filter.MaxRules + 1]ruleTotal) {
	a.mu.Lock()
	dp := a.dp
	a.mu.Unlock()
	if dp == nil {
		return t
	}
	cs, err := dp.Counters()
	if err != nil {
		return t
	}
	for i := range t {
		for r, n := range cs.Packets[i] {
			switch filter.Reason(r).Verdict() {
			case filter.Accept:
				t[i].accepted += n
				t[i].bytes += cs.Bytes[i][r]
			case filter.Drop:
				t[i].dropped += n
			}
		}
	}
	return t
}

func (a *Agent) packetTotals() (accepted, dropped uint64) {
	a.mu.Lock()
	dp := a.dp
	a.mu.Unlock()
	if dp == nil {
		return 0, 0
	}
	cs, err := dp.Counters()
	if err != nil {
		return 0, 0
	}
	for t := range cs.Packets {
		if t == datapath.NoTable {
			continue
		}
		for r, n := range cs.Packets[t] {
			switch filter.Reason(r).Verdict() {
			case filter.Accept:
				accepted += n
			case filter.Drop:
				dropped += n
			}
		}
	}
	return accepted, dropped
}

// interesting says which zero counters are still exported, so that rate()
// and alerts have a series from the first scrape: the accept and drop
// reasons of every rule.
func interesting(t int, r filter.Reason) bool {
	return t != datapath.NoTable && r.Verdict() != filter.Pass
}

// serveMetrics serves /metrics on l until ctx ends.
func (a *Agent) serveMetrics(ctx context.Context, l net.Listener) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{a}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "nlbd: metrics are at /metrics", http.StatusNotFound)
	})
	srv := newHTTPServer(mux, metricsTimeouts)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
