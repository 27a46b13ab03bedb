//go:build linux

package cluster

import (
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/netns"
)

func TestSmoke(t *testing.T) {
	netns.RequireRoot(t)
	c := New(t, Options{})
	for id := uint8(1); id <= 3; id++ {
		c.Start(id)
	}
	e, err := c.WaitConverged([]uint8{1, 2, 3}, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("epoch %d", e)
	counts := map[uint8]int{}
	for i := 0; i < 60; i++ {
		cl := c.Clients[i%2]
		id, local, err := cl.Get(cl.IPs[i%4], PortHTTP, 2*time.Second)
		if err != nil {
			t.Fatalf("get %d: %v", i, err)
		}
		own, err := c.Owner(1, local, PortHTTP, "tcp")
		if err != nil {
			t.Fatal(err)
		}
		if own != id {
			t.Errorf("%v answered by %d, owner %d", local, id, own)
		}
		counts[id]++
	}
	t.Logf("counts %v", counts)
}
