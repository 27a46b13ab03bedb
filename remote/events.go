package remote

import (
	"encoding/json"
	"sort"
)

// SendFunc sends a command to one host (target: its ID) or to every host
// the sender reaches (target 0), as nlbctl's flags or the web view say.
type SendFunc func(target uint8, cmd Command, args Args) (*Result, error)

// HostEvent is an event with the host whose history holds it.
type HostEvent struct {
	On uint8 `json:"on"`
	Event
}

// maxEventPages bounds the requests one host's history takes to read.
const maxEventPages = 64

// EventReader reads the hosts' event histories and remembers, per host
// and agent run, how far it read: each event is returned once.
type EventReader struct {
	cursors map[uint8]eventCursor
}

type eventCursor struct {
	boot int64
	seq  uint64
}

// Read returns the events each answering host recorded at or after
// sinceTime (Unix ns; 0: all it holds) that this reader has not returned
// yet, paging a host whose reply did not hold them all; seq, when not 0,
// is where a single host's history is read from. Events are ordered by
// time. The result is the first request's (for the exit status).
func (er *EventReader) Read(send SendFunc, seq uint64, sinceTime int64) ([]HostEvent, *Result, error) {
	if er.cursors == nil {
		er.cursors = map[uint8]eventCursor{}
	}
	var out []HostEvent
	take := func(r HostReply) (more bool) {
		var res EventsResult
		if r.Status != StatusOK || json.Unmarshal(r.Result, &res) != nil {
			return false
		}
		c := er.cursors[r.Host]
		if c.boot != res.Boot {
			c = eventCursor{boot: res.Boot} // the agent restarted: its sequences began again
		}
		for _, ev := range res.Events {
			if ev.Seq > c.seq {
				out = append(out, HostEvent{r.Host, ev})
				c.seq = ev.Seq
			}
		}
		er.cursors[r.Host] = c
		return res.More
	}
	res, err := send(0, CmdEvents, Args{Since: seq, SinceTime: sinceTime})
	if err != nil {
		return nil, nil, err
	}
	for _, r := range res.Replies {
		id := r.Host
		for page := 0; take(r) && page < maxEventPages; page++ {
			next, err := send(id, CmdEvents, Args{Since: er.cursors[id].seq, SinceTime: sinceTime})
			if err != nil {
				return nil, nil, err
			}
			r = HostReply{}
			for _, nr := range next.Replies {
				if nr.Host == id {
					r = nr
				}
			}
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Time != out[j].Time {
			return out[i].Time < out[j].Time
		}
		return out[i].On < out[j].On
	})
	return out, res, nil
}
