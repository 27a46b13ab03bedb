package heartbeat

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func drain(c *MemConn) []string {
	var got []string
	for {
		b, ok := c.TryReceive()
		if !ok {
			return got
		}
		got = append(got, string(b))
	}
}

func TestNetworkDelivery(t *testing.T) {
	t0 := time.Unix(0, 0)
	n := NewNetwork(1, t0)
	a, b, c := n.Join("a"), n.Join("b"), n.Join("c")
	a.Send([]byte("1"))
	n.Advance(t0)
	if got := drain(b); fmt.Sprint(got) != "[1]" {
		t.Fatalf("b got %v", got)
	}
	if got := drain(a); len(got) != 0 {
		t.Fatalf("sender heard itself: %v", got)
	}
	drain(c)

	// Partition: a alone; b and c together.
	n.Partition([]string{"a"})
	a.Send([]byte("2"))
	b.Send([]byte("3"))
	n.Advance(t0)
	if got := drain(c); fmt.Sprint(got) != "[3]" {
		t.Fatalf("partitioned c got %v", got)
	}
	if got := drain(a); len(got) != 0 {
		t.Fatalf("partitioned a got %v", got)
	}
	n.Heal()
	a.Send([]byte("4"))
	n.Advance(t0)
	if got := drain(c); fmt.Sprint(got) != "[4]" {
		t.Fatalf("after heal c got %v", got)
	}
	drain(b)

	// Delay holds frames until their time; jitter reorders.
	n.SetDelay(10*time.Millisecond, 50*time.Millisecond)
	for i := 0; i < 50; i++ {
		a.Send([]byte{byte(i)})
	}
	n.Advance(t0.Add(5 * time.Millisecond))
	if got := drain(b); len(got) != 0 {
		t.Fatalf("delayed frames arrived early: %d", len(got))
	}
	n.Advance(t0.Add(time.Second))
	got := drain(b)
	inOrder := true
	for i := range got {
		inOrder = inOrder && got[i][0] == byte(i)
	}
	if len(got) != 50 || inOrder {
		t.Fatalf("%d frames, in order %v: want 50, reordered", len(got), inOrder)
	}
}

func TestNetworkLossAndDuplication(t *testing.T) {
	t0 := time.Unix(0, 0)
	n := NewNetwork(2, t0)
	a, b := n.Join("a"), n.Join("b")
	n.SetLoss(0.2, 0.1)
	for i := 0; i < 1000; i++ {
		a.Send([]byte("x"))
	}
	n.Advance(t0)
	got := len(drain(b))
	// Expected 1000 × 1.1 × 0.8 = 880.
	if got < 800 || got > 960 {
		t.Fatalf("received %d of 1000 frames with 20%% loss and 10%% duplication", got)
	}
	n.SetLoss(0, 0)
	n.SetLinkLoss("a", "b", 1)
	a.Send([]byte("y"))
	b.Send([]byte("z"))
	n.Advance(t0)
	if len(drain(b)) != 0 || len(drain(a)) != 1 {
		t.Fatal("asymmetric link loss not applied")
	}
}

func TestMemConnReceive(t *testing.T) {
	n := NewNetwork(3, time.Now())
	a, b := n.Join("a"), n.Join("b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Run(ctx)
	a.Send([]byte("hello"))
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	m, err := b.Receive(rctx)
	if err != nil || string(m.Payload) != "hello" {
		t.Fatalf("Receive = %q, %v", m, err)
	}
	b.Close()
	b.Close() // idempotent
	if _, err := b.Receive(ctx); err != ErrClosed {
		t.Fatalf("Receive after Close: %v", err)
	}
	if err := b.Send([]byte("x")); err != ErrClosed {
		t.Fatalf("Send after Close: %v", err)
	}
}

// TestNetworkExact: with no loss and no duplication every frame arrives
// exactly once; delays stay within their bounds and frames due at one
// instant keep their send order.
func TestNetworkExact(t *testing.T) {
	t0 := time.Unix(0, 0)
	n := NewNetwork(5, t0)
	a, b := n.Join("a"), n.Join("b")
	for i := 0; i < 200; i++ {
		a.Send([]byte{byte(i)})
	}
	n.Advance(t0)
	got := drain(b)
	if len(got) != 200 {
		t.Fatalf("received %d of 200 frames with no loss", len(got))
	}
	for i, f := range got {
		if f[0] != byte(i) {
			t.Fatalf("frame %d arrived as %d: order lost", f[0], i)
		}
	}
	n.SetDelay(10*time.Millisecond, 20*time.Millisecond)
	for i := 0; i < 100; i++ {
		a.Send([]byte{byte(i)})
	}
	n.Advance(t0.Add(10*time.Millisecond - 1))
	if early := drain(b); len(early) != 0 {
		t.Fatalf("%d frames arrived before the minimum delay", len(early))
	}
	n.Advance(t0.Add(20 * time.Millisecond))
	if late := drain(b); len(late) != 100 {
		t.Fatalf("%d of 100 frames arrived by the maximum delay", len(late))
	}
	// Partition groups are numbered from 1: a named group is apart from
	// the unnamed endpoints (group 0).
	c := n.Join("c")
	n.SetDelay(0, 0)
	n.Partition([]string{"a"})
	a.Send([]byte("p"))
	c.Send([]byte("q"))
	n.Advance(t0.Add(time.Second))
	if len(drain(b)) != 1 || len(drain(a)) != 0 || len(drain(c)) != 0 {
		t.Fatal("partition {a} | {b, c} not applied")
	}
}

// TestMemConnDropped: frames beyond a full inbox are dropped and counted.
func TestMemConnDropped(t *testing.T) {
	t0 := time.Unix(0, 0)
	n := NewNetwork(7, t0)
	a, b := n.Join("a"), n.Join("b")
	for i := 0; i < 1100; i++ {
		a.Send([]byte{1})
	}
	n.Advance(t0)
	if got := b.Dropped(); got != 1100-1024 {
		t.Fatalf("dropped %d, want %d", got, 1100-1024)
	}
	if got := len(drain(b)); got != 1024 {
		t.Fatalf("received %d", got)
	}
}
