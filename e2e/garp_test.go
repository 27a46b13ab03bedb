//go:build linux

package e2e

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/remote"
)

// TestGratuitousARP: in each MAC mode a host announces the VIP at the
// mode's cluster MAC when its agent starts, when it starts serving and
// when it stops serving, and not in between. Frames are captured on the
// host's switch port, so only its own announcements count.
func TestGratuitousARP(t *testing.T) {
	eachMode(t, []string{"unicast", "multicast", "igmp"}, func(t *testing.T, mode string) {
		c := cluster.New(t, cluster.Options{Mode: mode, Hosts: 2, Clients: 1, ClientIPs: 1, InitialState: "stopped"})
		want := clusterMAC(t, mode)
		w := c.WatchARP(2)
		c.Start(1)
		c.Start(2)

		check := func(what string, n int) int {
			t.Helper()
			seen, err := w.WaitMore(n, 5*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			for _, a := range seen[n:] {
				if a.MAC.String() != want.String() {
					t.Errorf("%s: announced %v, want the cluster MAC %v", what, a.MAC, want)
				}
			}
			// Let the step settle: nothing more is announced until the next.
			time.Sleep(time.Second)
			settled := len(w.Seen())
			t.Logf("%s: %d announcement(s)", what, settled-n)
			return settled
		}
		n := check("agent start", 0)
		waitState(t, c, 2, "stopped")
		if got := len(w.Seen()); got != n {
			t.Fatalf("a stopped host announced %d more times", got-n)
		}
		if _, err := c.Local(2, remote.CmdStart, remote.Args{}); err != nil {
			t.Fatal(err)
		}
		n = check("starts serving", n)
		waitState(t, c, 2, "converged", "converged as default")
		if _, err := c.Local(2, remote.CmdStop, remote.Args{}); err != nil {
			t.Fatal(err)
		}
		check("stops serving", n)
	})
}

// clusterMAC is the MAC the agent announces for the VIP in mode.
func clusterMAC(t *testing.T, mode string) net.HardwareAddr {
	t.Helper()
	f := map[string]func(vip netip.Addr) (net.HardwareAddr, error){
		"unicast": macmode.UnicastMAC, "multicast": macmode.MulticastMAC, "igmp": macmode.IGMPMAC,
	}[mode]
	mac, err := f(cluster.VIP)
	if err != nil {
		t.Fatal(err)
	}
	return mac
}
