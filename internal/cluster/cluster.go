//go:build linux

// Package cluster runs a real nlb cluster in network namespaces for tests,
// the demo and benchmarks: N host namespaces and client namespaces on one
// Linux bridge, a real nlbd per host, a small real backend per host (an
// HTTP server answering with its host ID, TCP and UDP echo), and clients.
// Names carry the run's prefix, addresses come from 198.18.0.0/15, and
// everything is removed at cleanup, also on failure.
package cluster

import (
	"cmp"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// Addresses. Everything lives in 198.18.0.0/24 on one bridge.
var (
	VIP = netip.MustParseAddr("198.18.0.100")
	// VIP6 is the IPv6 VIP of a dual-stack cluster (Options.IPv6), from
	// the benchmarking prefix 2001:2::/48 (RFC 5180).
	VIP6 = netip.MustParseAddr("2001:2::100")
	// HostIP(i) = 198.18.0.i; ClientIP(c, k) = 198.18.0.(200+10c+k).
)

// HostIP is host id's dedicated address.
func HostIP(id uint8) netip.Addr { return netip.AddrFrom4([4]byte{198, 18, 0, id}) }

// MetricsAddr is host id's Prometheus endpoint, on its dedicated IP.
func MetricsAddr(id uint8) netip.AddrPort { return netip.AddrPortFrom(HostIP(id), 9425) }

// HostIP is host id's dedicated IP on this cluster's segment.
func (c *Cluster) HostIP(id uint8) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, c.Opts.Net, id})
}

// MetricsAddr is host id's metrics endpoint on this cluster's segment.
func (c *Cluster) MetricsAddr(id uint8) netip.AddrPort { return netip.AddrPortFrom(c.HostIP(id), 9425) }

func (c *Cluster) clientIP(ci, k int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18, c.Opts.Net, byte(200 + 10*ci + k)})
}

func vipList(vs []netip.Addr) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = v.String()
	}
	return strings.Join(s, ", ")
}

// HostIP6 is host id's IPv6 address in a dual-stack cluster.
func HostIP6(id uint8) netip.Addr { return netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 15: id}) }

// ClientIP6 is IPv6 address k of client namespace c: clients in two /64s
// (c even, c odd).
func ClientIP6(c, k int) netip.Addr {
	return netip.AddrFrom16([16]byte{0x20, 0x01, 0, 2, 0, 0, 0, 0, 15: byte(200 + 10*c + k)})
}

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
	// Quorum is cluster.quorum (default majority); QuorumVoters is
	// cluster.quorum_voters (default 0: the last agreed members).
	Quorum       string
	QuorumVoters int
	// Grace is cluster.grace (default 3s).
	Grace time.Duration
	// InitialState is host.initial_state (default started).
	InitialState string
	// HostExtra is appended to every host's host section (YAML indented
	// by two spaces, e.g. "  retain_state: true\n").
	HostExtra string
	// A second cluster in one test needs its own names and addresses:
	// Tag suffixes its switch's and clients' namespaces, Net is its
	// segment's third octet (198.18.Net.0/24), FirstID its first host ID
	// (hosts FirstID…FirstID+Hosts-1), VIPs its VIPs (default [VIP]),
	// and Gateway, if set, the hosts' default route (a router on the
	// segment).
	Tag     string
	Net     uint8
	FirstID uint8
	VIPs    []netip.Addr
	Gateway netip.Addr
	// IPv6 makes the cluster dual-stack: VIP6 after the IPv4 VIPs, an
	// IPv6 address on every host (HostIP6) and client (Client.IPs6),
	// backends on IPv6 too.
	IPv6 bool
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
	Key     remote.Key // the admin role's key (the cluster key serves it)
}

// Host is one cluster host.
type Host struct {
	ID      uint8
	NS      *netns.NS
	Ifname  string
	Config  string
	RunDir  string
	DataDir string
	BPFFS   string
	Log     string
	// Env is added to the agent's environment (NOTIFY_SOCKET, …).
	Env []string

	c *Cluster
	// Requests counts the HTTP requests the host's backend answered.
	Requests atomic.Int64
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan error
	http     map[uint16]*http.Server
	// keyFile and initialState override the cluster's (AddForeign).
	keyFile, initialState string
	// extra and remoteExtra are appended to the cluster and the
	// remote_control sections (SetKeys).
	extra, remoteExtra string
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
	if o.FirstID == 0 {
		o.FirstID = 1
	}
	if len(o.VIPs) == 0 {
		o.VIPs = []netip.Addr{VIP}
	}
	if o.IPv6 && !slices.Contains(o.VIPs, VIP6) {
		o.VIPs = append(o.VIPs, VIP6)
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
	c.Key = remote.DeriveKey(keyBytes, remote.RoleAdmin)
	if o.Nlbd == "" {
		o.Nlbd = buildNlbd(t, c.Dir)
		c.Opts.Nlbd = o.Nlbd
	}
	c.Switch = netns.Switch(t, o.Tag)
	if o.Flood {
		c.bridgeSet(t, "ageing_time", "0")
	}
	if o.Mode == "igmp" {
		// Snooping with a querier: the bridge forwards the cluster's
		// multicast frames to member ports only (see PLATFORM notes).
		c.bridgeSet(t, "multicast_snooping", "1")
		c.bridgeSet(t, "multicast_querier", "1")
	}
	for i := 0; i < o.Hosts; i++ {
		c.addHost(t, o.FirstID+uint8(i))
	}
	for ci := range o.Clients {
		ns := netns.New(t, fmt.Sprintf("c%d%s", ci, o.Tag))
		ifname := fmt.Sprintf("%sc%d%s", netns.Prefix, ci, o.Tag)
		netns.Plug(t, c.Switch, ns, ifname, c.clientIP(ci, 0).String()+"/24")
		cl := &Client{NS: ns, Ifname: ifname, IPs: []netip.Addr{c.clientIP(ci, 0)}}
		h := ns.Netlink(t)
		l, err := h.LinkByName(ifname)
		if err != nil {
			t.Fatalf("%v", err)
		}
		for k := 1; k < o.ClientIPs; k++ {
			netns.Addr(t, h, l, c.clientIP(ci, k).String()+"/24")
			cl.IPs = append(cl.IPs, c.clientIP(ci, k))
		}
		for k := 0; o.IPv6 && k < o.ClientIPs; k++ {
			netns.Addr(t, h, l, ClientIP6(ci, k).String()+"/64")
			cl.IPs6 = append(cl.IPs6, ClientIP6(ci, k))
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
	netns.Plug(t, c.Switch, ns, ifname, c.HostIP(id).String()+"/24")
	if c.Opts.IPv6 {
		h := ns.Netlink(t)
		l, err := h.LinkByName(ifname)
		if err != nil {
			t.Fatalf("%v", err)
		}
		netns.Addr(t, h, l, HostIP6(id).String()+"/64")
	}
	if gw := c.Opts.Gateway; gw.IsValid() {
		if err := ns.Do(func() error {
			return netlink.RouteAdd(&netlink.Route{Gw: gw.AsSlice()})
		}); err != nil {
			t.Fatalf("host %d: default route via %v: %v", id, gw, err)
		}
	}
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
		RunDir: filepath.Join(dir, "run"), DataDir: filepath.Join(dir, "data"), BPFFS: filepath.Join(dir, "bpf"), Log: filepath.Join(c.Dir, fmt.Sprintf("host%d.log", id)), c: c,
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
  quorum: %s
  quorum_voters: %d
  remote_control:
    enabled: true
%s%s  port_rules:
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
%s`, vipList(c.Opts.VIPs), c.Opts.Mode, cmp.Or(h.keyFile, c.KeyFile), c.Opts.Period, c.Opts.Grace, cmp.Or(c.Opts.Quorum, "majority"), c.Opts.QuorumVoters, h.remoteExtra, h.extra, PortHTTP, PortEcho, PortSticky,
		h.ID, h.Ifname, c.HostIP(h.ID), c.MetricsAddr(h.ID), cmp.Or(h.initialState, c.Opts.InitialState), c.Opts.OnExit, c.Opts.DrainTimeout, w, hc, w, w, c.hostExtra(h))
}

// hostExtra is Options.HostExtra and, in a dual-stack cluster, the
// host's dedicated IPv6 address.
func (c *Cluster) hostExtra(h *Host) string {
	if !c.Opts.IPv6 {
		return c.Opts.HostExtra
	}
	return fmt.Sprintf("  dedicated_ip6: %s/64\n", HostIP6(h.ID)) + c.Opts.HostExtra
}

// SetKeys rewrites host id's key settings in its config file: the
// current cluster key file, the next one ("" for none), the pinned hash
// seed (hex, "" for none) and, if given, the monitor key file; Reload
// then applies them.
func (c *Cluster) SetKeys(id uint8, keyFile, nextKeyFile, hashSeed string, monitorKeyFile ...string) {
	h := c.Hosts[id]
	h.keyFile, h.extra = keyFile, ""
	if nextKeyFile != "" {
		h.extra += "  next_key_file: " + nextKeyFile + "\n"
	}
	if hashSeed != "" {
		h.extra += "  hash_seed: \"" + hashSeed + "\"\n"
	}
	h.remoteExtra = ""
	for _, m := range monitorKeyFile {
		h.remoteExtra += "    monitor_key_file: " + m + "\n"
	}
	if err := os.WriteFile(h.Config, []byte(c.config(h)), 0o600); err != nil {
		c.T.Fatalf("%v", err)
	}
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
