package agent

import (
	"encoding/json"
	"sync"
	"time"

	"github.com/nlbproject/nlb/remote"
)

// EventHistory is how many events a host keeps (the oldest go first).
const EventHistory = 1024

// eventRing is the agent's bounded event history: each event gets the
// next sequence number (from 1 at each agent start; Boot tells runs
// apart), and readers page through it by sequence or time.
type eventRing struct {
	mu   sync.Mutex
	boot int64
	buf  []entry // circular, len ≤ EventHistory
	head int     // index of the oldest when full
	next uint64  // the next sequence number
	// sink, if set, hears each event after it is recorded (the notify
	// hook); called with mu released, in sequence order.
	sink   func(remote.Event)
	sinkMu sync.Mutex
}

// entry is a recorded event with its time in Unix ns (readers filter by
// it without parsing the event's text).
type entry struct {
	ev remote.Event
	at int64
}

func newEventRing(boot time.Time) *eventRing {
	return &eventRing{boot: boot.UnixNano(), next: 1}
}

// add records an event and passes it to the sink.
func (r *eventRing) add(at time.Time, kind string, host uint8, detail, source string) remote.Event {
	// sinkMu keeps the sink's calls in sequence order without holding mu
	// (readers must not wait on a hook's queue).
	r.sinkMu.Lock()
	defer r.sinkMu.Unlock()
	r.mu.Lock()
	ev := remote.Event{Seq: r.next, Time: at.UTC().Format(time.RFC3339Nano), Kind: kind, Host: host,
		Detail: detail, Source: source}
	r.next++
	if len(r.buf) < EventHistory {
		r.buf = append(r.buf, entry{ev, at.UnixNano()})
	} else {
		r.buf[r.head] = entry{ev, at.UnixNano()}
		r.head = (r.head + 1) % EventHistory
	}
	sink := r.sink
	r.mu.Unlock()
	if sink != nil {
		sink(ev)
	}
	return ev
}

// last is the newest sequence number given (0: none yet).
func (r *eventRing) last() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.next - 1
}

// eventBudget is how many bytes of events one reply carries: the reply
// limit less room for the envelope.
const eventBudget = remote.MaxReplyBody - 1024

// since returns the oldest events after seq (and at or after sinceTime,
// Unix ns, when not 0), at most limit of them (0: no limit) and no more
// than fit in one reply.
func (r *eventRing) since(seq uint64, sinceTime int64, limit int) remote.EventsResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := remote.EventsResult{Boot: r.boot, Last: r.next - 1, Events: []remote.Event{}}
	if len(r.buf) > 0 {
		res.First = r.buf[r.head].ev.Seq
	}
	size := 0
	for i := range r.buf {
		e := r.buf[(r.head+i)%len(r.buf)]
		ev := e.ev
		if ev.Seq <= seq || e.at < sinceTime {
			continue
		}
		b, _ := json.Marshal(ev)
		if limit > 0 && len(res.Events) == limit || size+len(b)+1 > eventBudget {
			res.More = true
			break
		}
		size += len(b) + 1
		res.Events = append(res.Events, ev)
	}
	return res
}
