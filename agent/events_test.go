package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nlbproject/nlb/remote"
)

func TestEventRing(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	r := newEventRing(t0)
	var heard []uint64
	r.sink = func(ev remote.Event) { heard = append(heard, ev.Seq) }
	for i := range EventHistory + 10 {
		r.add(t0.Add(time.Duration(i)*time.Second), "join", uint8(i%64+1), fmt.Sprint("event ", i), "")
	}
	if len(heard) != EventHistory+10 || heard[0] != 1 || heard[len(heard)-1] != EventHistory+10 {
		t.Fatalf("sink heard %d events, first %d", len(heard), heard[0])
	}
	// The oldest ten are gone; a reader from the start gets the oldest
	// kept, in order, as many as fit in one reply, and is told there
	// are more.
	res := r.since(0, 0, 0)
	if res.First != 11 || res.Last != EventHistory+10 || res.Boot != t0.UnixNano() {
		t.Fatalf("first %d last %d boot %d", res.First, res.Last, res.Boot)
	}
	if res.Events[0].Seq != 11 || !res.More || len(res.Events) == 0 || len(res.Events) >= EventHistory {
		t.Fatalf("page: first %d, %d events, more %v", res.Events[0].Seq, len(res.Events), res.More)
	}
	// Paging by sequence reads every event once, in order.
	var seqs []uint64
	for since, pages := uint64(0), 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		p := r.since(since, 0, 0)
		for _, ev := range p.Events {
			seqs = append(seqs, ev.Seq)
			since = ev.Seq
		}
		if !p.More {
			break
		}
	}
	if len(seqs) != EventHistory {
		t.Fatalf("paged %d events, want %d", len(seqs), EventHistory)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("sequence jumps from %d to %d", seqs[i-1], seqs[i])
		}
	}
	// By time and with a limit.
	p := r.since(0, t0.Add(time.Duration(EventHistory+5)*time.Second).UnixNano(), 0)
	if len(p.Events) != 5 || p.Events[0].Seq != EventHistory+6 || p.More {
		t.Fatalf("since time: %d events from %d", len(p.Events), p.Events[0].Seq)
	}
	if p := r.since(0, 0, 3); len(p.Events) != 3 || !p.More {
		t.Fatalf("limit 3: %d events", len(p.Events))
	}
	// A page always fits in a reply, even of the largest events.
	big := newEventRing(t0)
	for range 100 {
		big.add(t0, "command", 1, strings.Repeat("x", 1000), "198.18.0.200 (admin key)")
	}
	if p := big.since(0, 0, 0); len(p.Events) == 0 || !p.More || len(p.Events)*1000 > remote.MaxReplyBody {
		t.Fatalf("large events: %d in a page", len(p.Events))
	}
}
