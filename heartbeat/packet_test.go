//go:build linux

package heartbeat

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	inetns "github.com/nlbproject/nlb/internal/netns"
)

// TestPacketConnBridge: three hosts on a Linux bridge exchange signed
// heartbeats over AF_PACKET; every host hears the other two, padded short
// frames decode, and a closed Conn unblocks its reader.
func TestPacketConnBridge(t *testing.T) {
	inetns.RequireRoot(t)
	sw := inetns.Switch(t, "")
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	conns := make([]*PacketConn, 3)
	for i := range conns {
		ns := inetns.New(t, fmt.Sprintf("h%d", i+1))
		ifname := fmt.Sprintf("%sh%d", inetns.Prefix, i+1)
		inetns.Plug(t, sw, ns, ifname, fmt.Sprintf("198.18.0.%d/24", i+1))
		if err := ns.Do(func() (err error) { conns[i], err = ListenPacket(ifname, bcast); return }); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	// Hosts repeat their heartbeat as the agent does: a frame sent while
	// a freshly plugged bridge port is not yet forwarding is lost, and a
	// single send would make the test depend on that timing.
	frames := make([][]byte, len(conns))
	for i := range conns {
		h := sampleHeartbeat()
		h.HostID = uint8(i + 1)
		b, err := h.Marshal(&testKey)
		if err != nil {
			t.Fatal(err)
		}
		frames[i] = b
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sendDone := make(chan struct{})
	defer func() { <-sendDone }()
	defer cancel()
	go func() {
		defer close(sendDone)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			for i, c := range conns {
				if err := c.Send(frames[i]); err != nil && ctx.Err() == nil {
					t.Errorf("host %d send: %v", i+1, err)
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	for i, c := range conns {
		g := NewGuard(Keyring{testKey}, testVIP, uint8(i+1))
		heard := map[uint8]bool{}
		for len(heard) < 2 {
			fr, err := c.Receive(ctx)
			if err != nil {
				t.Fatalf("host %d heard %v: %v", i+1, heard, err)
			}
			if fr.Source == ([6]byte{}) {
				t.Fatalf("host %d: a frame without its Ethernet source", i+1)
			}
			m, drop := g.Check(fr.Payload)
			if drop == DropReplay {
				continue // the same signed frame, repeated
			}
			if drop != DropNone {
				t.Fatalf("host %d: frame dropped: %v", i+1, drop)
			}
			heard[m.(*Heartbeat).HostID] = true
		}
	}
	cancel()
	<-sendDone
	// A closed Conn returns at once.
	done := make(chan error, 1)
	go func() { _, err := conns[0].Receive(context.Background()); done <- err }()
	time.Sleep(50 * time.Millisecond)
	conns[0].Close()
	select {
	case err := <-done:
		if err != ErrClosed {
			t.Fatalf("Receive after Close: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Receive did not return after Close")
	}
}
