//go:build linux

package cluster

import (
	"fmt"
	"os/exec"
	"strings"
)

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
