package remote

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// What clients (nlbctl, the web view) make of replies.

// decoded returns the results of res's successful replies, in the
// replies' order (by host ID), as T.
func decoded[T any](res *Result) []T {
	var out []T
	for _, r := range res.Replies {
		var v T
		if r.Status == StatusOK && json.Unmarshal(r.Result, &v) == nil {
			out = append(out, v)
		}
	}
	return out
}

// Queries decodes the query replies of res.
func Queries(res *Result) []QueryResult { return decoded[QueryResult](res) }

// Ports decodes the ports replies of res.
func Ports(res *Result) []PortsResult { return decoded[PortsResult](res) }

// MixedVersions reports whether the answering hosts run more than one
// version (an upgrade in progress): query then notes each host's.
func MixedVersions(res *Result) bool {
	seen := map[string]bool{}
	for _, q := range Queries(res) {
		seen[q.Version] = true
	}
	return len(seen) > 1
}

// Notes lists what keeps a host from taking its share: failing health
// checks ("health web: http 503"), shared priorities and an expired lease.
func (q *QueryResult) Notes() []string {
	out := []string{}
	for _, r := range slices.Sorted(maps.Keys(q.Health)) {
		if h := q.Health[r]; h != "up" {
			out = append(out, "health "+r+": "+h)
		}
	}
	for _, pc := range q.PriorityConflicts {
		out = append(out, fmt.Sprintf("priority %d of rule %s shared by hosts %s", pc.Priority, pc.Rule, pc.Hosts))
	}
	if !q.LeaseValid && q.State != "stopped" && q.State != "suspended" {
		out = append(out, "lease expired")
	}
	if b := q.BGP; b != nil {
		if len(b.Announced) == 0 {
			out = append(out, "bgp: nothing announced: "+b.Withdrawn)
		}
		for _, p := range slices.Sorted(maps.Keys(b.Peers)) {
			if st := b.Peers[p]; st != "established" {
				out = append(out, "bgp session "+p+": "+st)
			}
		}
	}
	return out
}

// NotesLine is Notes joined with "; ", or "-".
func (q *QueryResult) NotesLine() string {
	if n := q.Notes(); len(n) > 0 {
		return strings.Join(n, "; ")
	}
	return "-"
}

// String writes the IDs as 1,2,3.
func (h HostIDs) String() string {
	s := make([]string, len(h))
	for i, x := range h {
		s[i] = strconv.Itoa(int(x))
	}
	return strings.Join(s, ",")
}

// SilentRow is a host that did not answer but that answering hosts report
// as gone quiet while taking part: how long, and whether its lease has
// run out (its data plane, if it still runs, takes no new flows) and it
// was evicted.
type SilentRow struct {
	Host    uint8
	Evicted bool
	Notes   string
}

// SilentRows returns the silent hosts of a query's result, by ID, each as
// the answering host that heard it last sees it.
func SilentRows(res *Result) []SilentRow {
	answered := map[uint8]bool{}
	worst := map[uint8]SilentPeer{}
	seenBy := map[uint8]uint8{}
	for _, r := range res.Replies {
		answered[r.Host] = true
	}
	for _, q := range Queries(res) {
		for _, s := range q.Silent {
			if w, ok := worst[s.Host]; !ok || s.SilentMS < w.SilentMS {
				worst[s.Host], seenBy[s.Host] = s, q.Host // the freshest view
			}
		}
	}
	var ids []uint8
	for id := range worst {
		if !answered[id] {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var out []SilentRow
	for _, id := range ids {
		s := worst[id]
		what := []string{fmt.Sprintf("silent %.1fs to host %d", s.SilentMS/1000, seenBy[id])}
		if s.LeaseExpired {
			what = append(what, "lease expired")
		}
		if s.Evicted {
			what = append(what, "evicted")
		}
		out = append(out, SilentRow{id, s.Evicted, strings.Join(what, "; ")})
	}
	return out
}
