// Package convergence holds the cluster's agreement logic: membership,
// epochs, and the computation of bucket tables. It is pure: time comes in as
// an argument, and it opens no sockets and starts no goroutines.
package convergence

import (
	"sort"

	"github.com/nlbproject/nlb/filter"
)

// Rebalance computes the bucket table that follows prev when the live hosts
// and their weights are as given (host ID → load weight; a host absent from
// weights, or with weight 0, owns nothing). prev may be nil for a cluster's
// first table.
//
// The result is a deterministic function of (prev, weights): every host
// that agrees on both computes the same table, whatever the map's order.
// It guarantees:
//   - balance: each host owns floor(share) or floor(share)+1 buckets, where
//     share = Buckets × weight / Σweights, so |owned − share| < 1;
//   - minimal disruption: a bucket changes owner only if its owner left,
//     or its owner must shed it to meet its quota; the +1 remainders go
//     first to hosts that already hold more than floor(share), so no
//     balanced table is reachable with fewer moves.
//
// The table depends on its predecessor, so a host that joins (or rejoins
// after a partition) must learn the table in use before it can compute the
// next one; see docs/architecture.md, "Bucket table".
func Rebalance(prev *filter.Table, weights map[uint8]uint32) *filter.Table {
	var next filter.Table
	if prev != nil {
		next = *prev
	}
	ids := make([]uint8, 0, len(weights))
	var total uint64
	for id, w := range weights {
		if w > 0 && id != 0 && id <= filter.MaxHostID {
			ids = append(ids, id)
			total += uint64(w)
		}
	}
	if total == 0 {
		return &filter.Table{} // nobody may take the traffic
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })

	q := quotas(&next, ids, weights, total)
	cur := next.Counts()

	// Free the buckets of hosts that left (their quota is 0) and each
	// host's excess over its quota, taking an over-quota host's
	// highest-numbered buckets.
	var free []int
	for b := filter.Buckets - 1; b >= 0; b-- {
		if owner := next[b]; owner == 0 || cur[owner] > q[owner] {
			cur[owner]--
			next[b] = 0
			free = append(free, b)
		}
	}
	// Hand free buckets, lowest first, round-robin to hosts under quota.
	sort.Ints(free)
	deficit := make([]int, len(ids))
	for i, id := range ids {
		deficit[i] = q[id] - cur[id]
	}
	i := 0
	for _, b := range free {
		for deficit[i%len(ids)] <= 0 {
			i++
		}
		k := i % len(ids)
		next[b] = ids[k]
		deficit[k]--
		i++
	}
	return &next
}

// quotas returns each host's number of buckets: floor of its weighted share,
// plus one for the hosts that get the remainder. Only hosts whose share has
// a fractional part may get a +1 (so |owned − share| < 1 strictly; there are
// always enough of them). Among those it goes first to hosts that already
// own more than their floor (fewest moves), then by largest fractional
// share, then by lowest host ID.
func quotas(t *filter.Table, ids []uint8, weights map[uint8]uint32, total uint64) [filter.MaxHostID + 1]int {
	var q [filter.MaxHostID + 1]int
	cur := t.Counts()
	rem := make([]uint64, filter.MaxHostID+1)
	left := filter.Buckets
	for _, id := range ids {
		share := uint64(filter.Buckets) * uint64(weights[id])
		q[id] = int(share / total)
		rem[id] = share % total
		left -= q[id]
	}
	order := append([]uint8(nil), ids...)
	sort.SliceStable(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if (rem[a] > 0) != (rem[b] > 0) {
			return rem[a] > 0
		}
		ha, hb := cur[a] > q[a], cur[b] > q[b]
		if ha != hb {
			return ha
		}
		if rem[a] != rem[b] {
			return rem[a] > rem[b]
		}
		return a < b
	})
	for _, id := range order[:left] {
		q[id]++
	}
	return q
}
