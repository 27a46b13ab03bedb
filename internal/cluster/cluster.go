//go:build linux

// Package cluster runs a real nlb cluster in network namespaces for tests,
// the demo and benchmarks: N host namespaces and client namespaces on one
// Linux bridge, a real nlbd per host, a small real backend per host (an
// HTTP server answering with its host ID, TCP and UDP echo), and clients.
// Names carry the run's prefix, addresses come from 198.18.0.0/15, and
// everything is removed at cleanup, also on failure.
package cluster

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// Addresses. Everything lives in 198.18.0.0/24 on one bridge.
var (
	VIP = netip.MustParseAddr("198.18.0.100")
	// HostIP(i) = 198.18.0.i; ClientIP(c, k) = 198.18.0.(200+10c+k).
)

// HostIP is host id's dedicated address.
func HostIP(id uint8) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, id}) }

// MetricsAddr is host id's Prometheus endpoint, on its dedicated IP.
func MetricsAddr(id uint8) netip.AddrPort { return netip.AddrPortFrom(HostIP(id), 9425) }

// ClientIP is address k of client namespace c.
func ClientIP(c, k int) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, byte(200 + 10*c + k)}) }

// Ports served by every host's backend.
const (
	PortHTTP   = 80   // rule "web": multiple, affinity none
	PortEcho   = 7    // rule "echo": TCP and UDP, multiple, affinity none
	PortSticky = 8080 // rule "sticky": HTTP, multiple, affinity single
)

// Options shape a cluster.
type Options struct {
	Hosts     int    // default 3
	Clients   int    // client namespaces, default 2
	ClientIPs int    // addresses per client namespace, default 4
	Mode      string // unicast (default), multicast or igmp
	// Weights sets a host's weight on every rule (default: equal).
	Weights map[uint8]int
	// Period is the heartbeat period (default 100ms).
	Period time.Duration
	// OnExit is host.on_exit (default drainstop).
	OnExit string
	// DrainTimeout is host.drain_timeout (default 10s).
	DrainTimeout time.Duration
	// Health adds an HTTP health check of the local backend to rule web
	// (every 200ms, rise 2, fall 2).
	Health bool
	// Flood makes the switch forward every frame to every port (no MAC
	// learning), so that traffic to a host's own MAC costs the segment as
	// much as traffic to a unicast-mode cluster MAC: like for like.
	Flood bool
	// QuorumVoters is cluster.quorum_voters (default 0: off).
	QuorumVoters int
	// Grace is cluster.grace (default 3s).
	Grace time.Duration
	// InitialState is host.initial_state (default started).
	InitialState string
	// Nlbd is the nlbd binary; empty builds it into the cluster's dir.
	Nlbd string
	// Dir holds configs, keys and logs; empty uses a temporary directory.
	Dir string
}

// Cluster is a running test cluster.
type Cluster struct {
	T       netns.T
	Opts    Options
	Dir     string
	Switch  *netns.NS
	Hosts   map[uint8]*Host
	Clients []*Client
	KeyFile string
	Key     remote.Key
}

// Host is one cluster host.
type Host struct {
	ID     uint8
	NS     *netns.NS
	Ifname string
	Config string
	RunDir string
	BPFFS  string
	Log    string

	c    *Cluster
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan error
	http map[uint16]*http.Server
	// keyFile and initialState override the cluster's (AddForeign).
	keyFile, initialState string
}

// Client is one client namespace with its addresses.
type Client struct {
	NS     *netns.NS
	Ifname string
	IPs    []netip.Addr
}

// New creates the network, writes the configs and starts the backends;
// agents are started with Start.
func New(t netns.T, o Options) *Cluster {
	t.Helper()
	if o.Hosts == 0 {
		o.Hosts = 3
	}
	if o.Clients == 0 {
		o.Clients = 2
	}
	if o.ClientIPs == 0 {
		o.ClientIPs = 4
	}
	if o.Mode == "" {
		o.Mode = "unicast"
	}
	if o.Period == 0 {
		o.Period = 100 * time.Millisecond
	}
	if o.Grace == 0 {
		o.Grace = 3 * time.Second
	}
	if o.InitialState == "" {
		o.InitialState = "started"
	}
	if o.OnExit == "" {
		o.OnExit = "drainstop"
	}
	if o.DrainTimeout == 0 {
		o.DrainTimeout = 10 * time.Second
	}
	c := &Cluster{T: t, Opts: o, Dir: o.Dir, Hosts: map[uint8]*Host{}}
	if c.Dir == "" {
		d, err := os.MkdirTemp("", netns.Prefix+"-cluster-")
		if err != nil {
			t.Fatalf("%v", err)
		}
		c.Dir = d
		t.Cleanup(func() { os.RemoveAll(d) })
	}
	keyBytes := []byte(fmt.Sprintf("nlb test cluster key %s 0123456789abcdef", netns.Prefix))
	c.KeyFile = filepath.Join(c.Dir, "cluster.key")
	if err := os.WriteFile(c.KeyFile, keyBytes, 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	c.Key = remote.DeriveKey(keyBytes)
	if o.Nlbd == "" {
		o.Nlbd = buildNlbd(t, c.Dir)
		c.Opts.Nlbd = o.Nlbd
	}
	c.Switch = netns.Switch(t)
	if o.Flood {
		c.bridgeSet(t, "ageing_time", "0")
	}
	if o.Mode == "igmp" {
		// Snooping with a querier: the bridge forwards the cluster's
		// multicast frames to member ports only (see PLATFORM notes).
		c.bridgeSet(t, "multicast_snooping", "1")
		c.bridgeSet(t, "multicast_querier", "1")
	}
	for i := 1; i <= o.Hosts; i++ {
		c.addHost(t, uint8(i))
	}
	for ci := range o.Clients {
		ns := netns.New(t, fmt.Sprintf("c%d", ci))
		ifname := fmt.Sprintf("%sc%d", netns.Prefix, ci)
		netns.Plug(t, c.Switch, ns, ifname, ClientIP(ci, 0).String()+"/24")
		cl := &Client{NS: ns, Ifname: ifname, IPs: []netip.Addr{ClientIP(ci, 0)}}
		h := ns.Netlink(t)
		l, err := h.LinkByName(ifname)
		if err != nil {
			t.Fatalf("%v", err)
		}
		for k := 1; k < o.ClientIPs; k++ {
			netns.Addr(t, h, l, ClientIP(ci, k).String()+"/24")
			cl.IPs = append(cl.IPs, ClientIP(ci, k))
		}
		c.Clients = append(c.Clients, cl)
	}
	return c
}

func (c *Cluster) bridgeSet(t netns.T, opt, v string) {
	if err := c.Switch.Do(func() error {
		return os.WriteFile("/sys/class/net/br0/bridge/"+opt, []byte(v), 0o644)
	}); err != nil {
		// /sys shows the namespace of the process that mounted it; use ip.
		out, err := exec.Command("ip", "-n", c.Switch.Name, "link", "set", "br0", "type", "bridge", ipBridgeOpt[opt], v).CombinedOutput()
		if err != nil {
			t.Fatalf("bridge %s: %v: %s", opt, err, out)
		}
	}
}

var ipBridgeOpt = map[string]string{"multicast_snooping": "mcast_snooping", "multicast_querier": "mcast_querier", "ageing_time": "ageing_time"}

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// buildNlbd builds nlbd once per process.
func buildNlbd(t netns.T, dir string) string {
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildOnce.err = err
			return
		}
		out := filepath.Join(os.TempDir(), netns.Prefix+"-nlbd")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/nlbd")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("build nlbd: %v: %s", err, b)
			return
		}
		buildOnce.path = out
	})
	if buildOnce.err != nil {
		t.Fatalf("%v", buildOnce.err)
	}
	return buildOnce.path
}

func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		d = p
	}
}

// AddForeign adds host id running a second cluster with the same VIP
// and settings but another key, in state (e.g. "stopped"); start it
// with Start.
func (c *Cluster) AddForeign(id uint8, state string) {
	c.T.Helper()
	key := filepath.Join(c.Dir, fmt.Sprintf("foreign%d.key", id))
	if err := os.WriteFile(key, []byte(fmt.Sprintf("another cluster's key, host %d, 32+ bytes long", id)), 0o600); err != nil {
		c.T.Fatalf("%v", err)
	}
	c.addHostWith(c.T, id, key, state)
}

func (c *Cluster) addHost(t netns.T, id uint8) { c.addHostWith(t, id, "", "") }

func (c *Cluster) addHostWith(t netns.T, id uint8, keyFile, state string) {
	ns := netns.New(t, fmt.Sprintf("h%d", id))
	ifname := fmt.Sprintf("%sh%d", netns.Prefix, id)
	netns.Plug(t, c.Switch, ns, ifname, HostIP(id).String()+"/24")
	if c.Opts.Mode == "igmp" {
		// Host ports are multicast-router ports: frames to the cluster
		// group reach them although the VIP is a unicast address.
		out, err := exec.Command("ip", "netns", "exec", c.Switch.Name, "bridge", "link", "set", "dev", "p"+ifname, "mcast_router", "2").CombinedOutput()
		if err != nil {
			t.Fatalf("mcast_router on p%s: %v: %s", ifname, err, out)
		}
	}
	dir := filepath.Join(c.Dir, fmt.Sprintf("host%d", id))
	h := &Host{ID: id, NS: ns, Ifname: ifname, Config: filepath.Join(dir, "nlb.yaml"),
		RunDir: filepath.Join(dir, "run"), BPFFS: filepath.Join(dir, "bpf"), Log: filepath.Join(c.Dir, fmt.Sprintf("host%d.log", id)), c: c,
		keyFile: keyFile, initialState: state}
	if err := os.MkdirAll(h.BPFFS, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	if err := os.WriteFile(h.Config, []byte(c.config(h)), 0o600); err != nil {
		t.Fatalf("%v", err)
	}
	startBackend(t, h)
	c.Hosts[id] = h
	t.Cleanup(func() {
		h.stopForCleanup()
		var st unix.Statfs_t
		if unix.Statfs(h.BPFFS, &st) == nil && st.Type == unix.BPF_FS_MAGIC {
			unix.Unmount(h.BPFFS, unix.MNT_DETACH)
		}
	})
}

// config is host h's configuration file.
func (c *Cluster) config(h *Host) string {
	hc := ""
	if c.Opts.Health {
		hc = fmt.Sprintf(", health: {type: http, url: \"http://127.0.0.1:%d/\", interval: 200ms, timeout: 200ms, rise: 2, fall: 2}", PortHTTP)
	}
	w := "equal"
	if v, ok := c.Opts.Weights[h.ID]; ok {
		w = strconv.Itoa(v)
	}
	return fmt.Sprintf(`cluster:
  name: test
  vips: [%s]
  mac_mode: %s
  key_file: %s
  heartbeat:
    period: %s
    loss_tolerance: 10
  grace: %s
  quorum_voters: %d
  remote_control:
    enabled: true
  port_rules:
    - {name: web, ports: "%d", protocol: tcp, mode: multiple, affinity: none}
    - {name: echo, ports: "%d", protocol: both, mode: multiple, affinity: none}
    - {name: sticky, ports: "%d", protocol: tcp, mode: multiple, affinity: single}
host:
  id: %d
  interface: %s
  dedicated_ip: %s/24
  metrics_address: %s
  initial_state: %s
  on_exit: %s
  drain_timeout: %s
  rules:
    web: {weight: "%s"%s}
    echo: {weight: "%s"}
    sticky: {weight: "%s"}
`, VIP, c.Opts.Mode, cmp.Or(h.keyFile, c.KeyFile), c.Opts.Period, c.Opts.Grace, c.Opts.QuorumVoters, PortHTTP, PortEcho, PortSticky,
		h.ID, h.Ifname, HostIP(h.ID), MetricsAddr(h.ID), cmp.Or(h.initialState, c.Opts.InitialState), c.Opts.OnExit, c.Opts.DrainTimeout, w, hc, w, w)
}

// SetWeight rewrites host id's weights (every rule) in its config file;
// Reload then applies them.
func (c *Cluster) SetWeight(id uint8, w int) {
	if c.Opts.Weights == nil {
		c.Opts.Weights = map[uint8]int{}
	}
	c.Opts.Weights[id] = w
	h := c.Hosts[id]
	if err := os.WriteFile(h.Config, []byte(c.config(h)), 0o600); err != nil {
		c.T.Fatalf("%v", err)
	}
}

// startBackend serves, inside the host's namespace: HTTP on :80 and
// :8080 answering "host N", a TCP line echo on :7 ("N line"), and a UDP
// echo bound to the VIP on :7 (a wildcard UDP socket would answer from
// the dedicated IP). IP_FREEBIND lets it bind before the agent adds the
// VIP.
func startBackend(t netns.T, h *Host) {
	var closers []io.Closer
	err := h.NS.Do(func() error {
		freebind := net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}}
		for _, port := range []uint16{PortHTTP, PortSticky} {
			if err := h.serveHTTP(port); err != nil {
				return err
			}
		}
		closers = append(closers, closerFunc(func() error {
			h.mu.Lock()
			defer h.mu.Unlock()
			for _, srv := range h.http {
				srv.Close()
			}
			return nil
		}))
		ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", PortEcho))
		if err != nil {
			return err
		}
		closers = append(closers, ln)
		go func() {
			for {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					r := bufio.NewReader(conn)
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							return
						}
						if _, err := fmt.Fprintf(conn, "%d %s", h.ID, line); err != nil {
							return
						}
					}
				}()
			}
		}()
		pc, err := freebind.ListenPacket(context.Background(), "udp4", netip.AddrPortFrom(VIP, PortEcho).String())
		if err != nil {
			return err
		}
		closers = append(closers, pc)
		go func() {
			buf := make([]byte, 2048)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte(fmt.Sprintf("%d ", h.ID)), buf[:n]...), from)
			}
		}()
		return nil
	})
	t.Cleanup(func() {
		for _, c := range closers {
			c.Close()
		}
	})
	if err != nil {
		t.Fatalf("backend of host %d: %v", h.ID, err)
	}
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// serveHTTP starts the HTTP backend on port ("host N"); it must run in
// the host's namespace.
func (h *Host) serveHTTP(port uint16) error {
	ln, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
	if err != nil {
		return err
	}
	body := fmt.Sprintf("host %d\n", h.ID)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, body)
	}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	h.mu.Lock()
	if h.http == nil {
		h.http = map[uint16]*http.Server{}
	}
	h.http[port] = srv
	h.mu.Unlock()
	return nil
}

// StopHTTP stops host id's HTTP backend on PortHTTP (its listener and
// connections close): the service dies, the agent keeps running.
func (c *Cluster) StopHTTP(id uint8) {
	h := c.Hosts[id]
	h.mu.Lock()
	srv := h.http[PortHTTP]
	delete(h.http, PortHTTP)
	h.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// StartHTTP starts host id's HTTP backend on PortHTTP again.
func (c *Cluster) StartHTTP(id uint8) {
	h := c.Hosts[id]
	if err := h.NS.Do(func() error { return h.serveHTTP(PortHTTP) }); err != nil {
		c.T.Fatalf("start HTTP on host %d: %v", id, err)
	}
}

// Start starts host id's agent.
func (c *Cluster) Start(id uint8) {
	c.T.Helper()
	h := c.Hosts[id]
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		c.T.Fatalf("host %d: agent already running", id)
	}
	logf, err := os.OpenFile(h.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.T.Fatalf("%v", err)
	}
	// nsenter enters only the network namespace: the agent's bpffs and
	// state files are in the shared mount namespace, so pins outlive it.
	cmd := exec.Command("nsenter", "--net="+h.NS.Path(), "--", c.Opts.Nlbd, "--config", h.Config,
		"--run-dir", h.RunDir, "--bpffs", h.BPFFS, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.T.Fatalf("start host %d: %v", id, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	h.cmd, h.done = cmd, done
}

// Signal sends sig to host id's agent.
func (c *Cluster) Signal(id uint8, sig syscall.Signal) {
	h := c.Hosts[id]
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		h.cmd.Process.Signal(sig)
	}
}

// Wait waits for host id's agent to exit and returns its error.
func (c *Cluster) Wait(id uint8, timeout time.Duration) error {
	h := c.Hosts[id]
	h.mu.Lock()
	done := h.done
	h.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case err := <-done:
		h.mu.Lock()
		h.cmd, h.done = nil, nil
		h.mu.Unlock()
		return err
	case <-time.After(timeout):
		return fmt.Errorf("host %d: agent still running after %v", id, timeout)
	}
}

// Kill kills host id's agent with SIGKILL and waits for it.
func (c *Cluster) Kill(id uint8) {
	c.Signal(id, syscall.SIGKILL)
	c.Wait(id, 10*time.Second)
}

func (h *Host) stopForCleanup() {
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	// Leave at once; a stuck agent is killed.
	cmd.Process.Signal(syscall.SIGUSR2)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Isolate cuts (or restores) host id's link to the switch.
func (c *Cluster) Isolate(id uint8, cut bool) {
	h := c.Switch.Netlink(c.T)
	l, err := h.LinkByName("p" + c.Hosts[id].Ifname)
	if err != nil {
		c.T.Fatalf("%v", err)
	}
	if cut {
		err = h.LinkSetDown(l)
	} else {
		err = h.LinkSetUp(l)
	}
	if err != nil {
		c.T.Fatalf("isolate host %d: %v", id, err)
	}
}

// CutHeartbeats drops (cut) or passes again every heartbeat frame in and
// out of host id's NIC with nftables netdev rules: the host no longer
// hears the cluster nor is heard, while clients still reach it (a
// partition of the cluster's control traffic only).
func (c *Cluster) CutHeartbeats(id uint8, cut bool) {
	c.T.Helper()
	h := c.Hosts[id]
	rules := "delete table netdev nlbcut"
	if cut {
		rules = fmt.Sprintf(`table netdev nlbcut {
	chain in { type filter hook ingress device %[1]s priority 0; ether type 0x886f drop; }
	chain out { type filter hook egress device %[1]s priority 0; ether type 0x886f drop; }
}`, h.Ifname)
	}
	err := h.NS.Do(func() error {
		x := exec.Command("nft", "-f", "-")
		x.Stdin = strings.NewReader(rules)
		if out, err := x.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		c.T.Fatalf("cut heartbeats of host %d: %v", id, err)
	}
}

// Local runs a command on host id's agent over its control socket.
func (c *Cluster) Local(id uint8, cmd remote.Command, args remote.Args) (*remote.HostReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := remote.DoLocal(ctx, remote.SocketPath(c.Hosts[id].RunDir), cmd, args)
	if err != nil {
		return nil, err
	}
	r := res.Replies[0]
	if r.Status != remote.StatusOK {
		return &r, fmt.Errorf("host %d: %s: %s", id, cmd, r.Error)
	}
	return &r, nil
}

// Query returns host id's query answer.
func (c *Cluster) Query(id uint8) (*remote.QueryResult, error) {
	r, err := c.Local(id, remote.CmdQuery, remote.Args{})
	if err != nil {
		return nil, err
	}
	var q remote.QueryResult
	if err := json.Unmarshal(r.Result, &q); err != nil {
		return nil, err
	}
	return &q, nil
}

// WaitConverged waits until every host in ids is converged on one epoch
// whose members are exactly ids, and returns that epoch.
func (c *Cluster) WaitConverged(ids []uint8, timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var epoch uint64
		ok := true
		var states []string
		for _, id := range ids {
			q, err := c.Query(id)
			if err != nil {
				ok = false
				states = append(states, fmt.Sprintf("%d: %v", id, err))
				continue
			}
			states = append(states, fmt.Sprintf("%d: %s e%d %v", id, q.State, q.Epoch, q.Members))
			if q.State != "converged" && q.State != "converged as default" || epoch != 0 && q.Epoch != epoch || !sameIDs(q.Members, ids) {
				ok = false
			}
			epoch = q.Epoch
		}
		if ok {
			return epoch, nil
		}
		last = strings.Join(states, "; ")
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("hosts %v did not converge in %v: %s", ids, timeout, last)
}

func sameIDs(a, b []uint8) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[uint8]bool{}
	for _, x := range a {
		seen[x] = true
	}
	for _, x := range b {
		if !seen[x] {
			return false
		}
	}
	return true
}

// Owner asks host id which host owns a flow in the live tables.
func (c *Cluster) Owner(id uint8, client netip.AddrPort, port uint16, proto string) (uint8, error) {
	r, err := c.Local(id, remote.CmdFilter, remote.Args{Client: client.String(),
		Dest: netip.AddrPortFrom(VIP, port).String(), Proto: proto})
	if err != nil {
		return 0, err
	}
	var f remote.FilterResult
	if err := json.Unmarshal(r.Result, &f); err != nil {
		return 0, err
	}
	return f.Owner, nil
}

// Dial opens a TCP connection from client address src (a fixed source
// port if sport != 0) to VIP:port, from inside the client's namespace.
func (cl *Client) Dial(src netip.Addr, sport uint16, port uint16, timeout time.Duration) (*net.TCPConn, error) {
	var conn net.Conn
	err := cl.NS.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice(), Port: int(sport)}}
		var err error
		conn, err = d.Dial("tcp4", netip.AddrPortFrom(VIP, port).String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// DialTo opens a TCP connection from client address src to dst, from
// inside the client's namespace.
func (cl *Client) DialTo(src netip.Addr, dst netip.AddrPort, timeout time.Duration) (*net.TCPConn, error) {
	var conn net.Conn
	err := cl.NS.Do(func() error {
		d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
		var err error
		conn, err = d.Dial("tcp4", dst.String())
		return err
	})
	if err != nil {
		return nil, err
	}
	return conn.(*net.TCPConn), nil
}

// Pid is the process ID of host id's running agent (0 if none).
func (c *Cluster) Pid(id uint8) int {
	h := c.Hosts[id]
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil || h.cmd.Process == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// Get makes one HTTP/1.0 request on a new connection and returns the ID of
// the host that answered and the client address:port used.
func (cl *Client) Get(src netip.Addr, port uint16, timeout time.Duration) (uint8, netip.AddrPort, error) {
	conn, err := cl.Dial(src, 0, port, timeout)
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.TCPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	id, err := HTTPHost(conn, timeout)
	return id, local, err
}

// HTTPHost makes one HTTP/1.0 request on conn and returns the ID of the
// host that answered.
func HTTPHost(conn net.Conn, timeout time.Duration) (uint8, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\nHost: vip\r\n\r\n"); err != nil {
		return 0, err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return 0, err
	}
	i := strings.LastIndex(string(b), "host ")
	if i < 0 {
		return 0, fmt.Errorf("unexpected answer %q", b)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b[i+5:])))
	if err != nil {
		return 0, fmt.Errorf("unexpected answer %q", b)
	}
	return uint8(n), nil
}

// UDPEcho sends one datagram from src to VIP:7 and returns the answering
// host.
func (cl *Client) UDPEcho(src netip.Addr, timeout time.Duration) (uint8, netip.AddrPort, error) {
	var conn *net.UDPConn
	err := cl.NS.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp4", &net.UDPAddr{IP: src.AsSlice()}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(VIP, PortEcho)))
		return err
	})
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	defer conn.Close()
	local := conn.LocalAddr().(*net.UDPAddr).AddrPort()
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		return 0, local, err
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		return 0, local, err
	}
	id, _, _ := strings.Cut(string(buf[:n]), " ")
	v, err := strconv.Atoi(id)
	if err != nil {
		return 0, local, fmt.Errorf("unexpected echo %q", buf[:n])
	}
	return uint8(v), local, nil
}

// FlowsOwnedBy returns n distinct client flows (address, port) of cl that
// the live tables (asked of host 1) give to one of owners for port/tcp.
// The same seed gives the same candidates.
func (c *Cluster) FlowsOwnedBy(cl *Client, port uint16, n int, seed uint64, owners ...uint8) []netip.AddrPort {
	c.T.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	var out []netip.AddrPort
	for tries := 0; len(out) < n; tries++ {
		if tries > 50*n {
			c.T.Fatalf("found only %d flows owned by %v", len(out), owners)
		}
		f := netip.AddrPortFrom(cl.IPs[r.IntN(len(cl.IPs))], uint16(20000+r.IntN(40000)))
		own, err := c.Owner(1, f, port, "tcp")
		if err != nil {
			c.T.Fatalf("%v", err)
		}
		if slices.Contains(owners, own) && !slices.Contains(out, f) {
			out = append(out, f)
		}
	}
	return out
}

// StartAll starts the agents of ids and waits until they converge
// together; it returns the epoch.
func (c *Cluster) StartAll(ids []uint8) uint64 {
	c.T.Helper()
	for _, id := range ids {
		c.Start(id)
	}
	e, err := c.WaitConverged(ids, 30*time.Second)
	if err != nil {
		c.T.Fatalf("%v", err)
	}
	return e
}
