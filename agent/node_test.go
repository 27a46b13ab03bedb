//go:build linux

package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
	inetns "github.com/nlbproject/nlb/internal/netns"
)

// testLogger routes logs to t.Log.
func testLogger(t *testing.T, name string) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: name, Output: testWriter{t}, Level: hclog.Info})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// TestNodesConvergeOnBridge: three hosts' heartbeat layers, on AF_PACKET
// sockets over a Linux bridge, converge on one epoch of three members; one
// is killed; the other two converge on an epoch without it.
func TestNodesConvergeOnBridge(t *testing.T) {
	inetns.RequireRoot(t)
	goroutines := runtime.NumGoroutine()
	sw := inetns.Switch(t, "")
	vip := netip.MustParseAddr("198.18.0.100")
	key := heartbeat.DeriveKey([]byte("namespace test cluster key 012345"))
	rules := []filter.PortRule{{StartPort: 80, EndPort: 80, Protocol: filter.ProtoTCP, Mode: filter.ModeMultiple, Affinity: filter.AffinityNone}}
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

	type host struct {
		node   *Node
		cancel context.CancelFunc
		done   chan error
	}
	hosts := map[uint8]*host{}
	for id := uint8(1); id <= 3; id++ {
		ns := inetns.New(t, fmt.Sprintf("n%d", id))
		ifname := fmt.Sprintf("%sn%d", inetns.Prefix, id)
		inetns.Plug(t, sw, ns, ifname, fmt.Sprintf("198.18.0.%d/24", id))
		var conn *heartbeat.PacketConn
		if err := ns.Do(func() (err error) { conn, err = heartbeat.ListenPacket(ifname, bcast); return }); err != nil {
			t.Fatal(err)
		}
		m := convergence.NewMachine(convergence.Config{
			HostID: id, Incarnation: uint64(time.Now().UnixNano()), ClusterVIP: vip,
			DedicatedIP: netip.AddrFrom4([4]byte{198, 18, 0, id}), Rules: rules,
			ConfigDigest: [16]byte{7}, Settings: []filter.RuleSetting{{Weight: 50, Priority: int(id)}},
			Timing: heartbeat.Timing{Period: 100 * time.Millisecond, LossTolerance: 5}, Grace: time.Second,
		})
		n := NewNode(m, conn, heartbeat.NewGuard(heartbeat.Keyring{key}, vip, id), key, 100*time.Millisecond, testLogger(t, fmt.Sprintf("host%d", id)))
		ctx, cancel := context.WithCancel(context.Background())
		h := &host{node: n, cancel: cancel, done: make(chan error, 1)}
		go func() { h.done <- n.Run(ctx); conn.Close() }()
		hosts[id] = h
		t.Cleanup(func() { cancel(); conn.Close(); <-h.done })
	}
	waitConverged := func(ids []uint8, members int) uint64 {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for time.Now().Before(deadline) {
			var epoch uint64
			ok := true
			for _, id := range ids {
				st, e := hosts[id].node.State()
				if st != convergence.StateConverged && st != convergence.StateDefault || epoch != 0 && e != epoch {
					ok = false
				}
				epoch = e
			}
			if ok && hosts[ids[0]].node.m.Epoch() != nil {
				if got := popcount(hosts[ids[0]].node.m.Epoch().Members); got == members {
					return epoch
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		var states []string
		for _, id := range ids {
			st, e := hosts[id].node.State()
			states = append(states, fmt.Sprintf("%d:%v/e%d", id, st, e))
		}
		t.Fatalf("hosts %v did not converge with %d members: %v", ids, members, states)
		return 0
	}
	e1 := waitConverged([]uint8{1, 2, 3}, 3)
	if st, _ := hosts[1].node.State(); st != convergence.StateDefault {
		t.Fatalf("host 1 (lowest ID) is %v, want converged as default", st)
	}
	// Kill host 2's agent.
	hosts[2].cancel()
	if err := <-hosts[2].done; err != nil {
		t.Fatalf("host 2 Run: %v", err)
	}
	hosts[2].done <- nil // for cleanup
	e2 := waitConverged([]uint8{1, 3}, 2)
	if e2 <= e1 {
		t.Fatalf("epoch after failure %d, before %d", e2, e1)
	}
	for id := uint8(1); id <= 3; id++ {
		hosts[id].cancel()
	}
	// Every Run has returned (cleanups wait); no goroutine may outlive it.
	for id, h := range hosts {
		if id != 2 {
			if err := <-h.done; err != nil {
				t.Fatalf("host %d Run: %v", id, err)
			}
			h.done <- nil
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > goroutines+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > goroutines+2 {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines left (before: %d):\n%s", n, goroutines, buf[:runtime.Stack(buf, true)])
	}
}

func popcount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}
