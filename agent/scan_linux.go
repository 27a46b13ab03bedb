package agent

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
)

// scan reports the buckets in which this host holds TCP flows: every
// socket (established, closing, SYN_RECV) whose local address is a VIP,
// mapped to its table and bucket by the filter model. TIME_WAIT does not
// count: it is no connection, and counting it would hold every bucket this
// host served in the last minute (an HTTP/1.0 server closes first, so
// every one of its connections ends in TIME_WAIT here). The kernel still
// accepts packets for it while the bucket is retained; afterwards a late
// FIN retransmit meets a RST from the new owner, which ends a closed
// connection either way (docs/architecture.md). It runs in
// the node's loop, after the marks of the previous step were installed. A
// dump the kernel reports as interrupted is an error, never a partial
// answer: a flow missed here would be reset by its bucket's new owner.
func (a *Agent) scan() (convergence.HeldScan, error) {
	// Stamped before the dump begins: a flow opened after that may be
	// missing from it, so it cannot release a bucket retained since.
	hs := convergence.HeldScan{At: time.Now()}
	err := a.heldFlows(func(t, b int) {
		if hs.Held[t] == nil {
			hs.Held[t] = map[uint16]bool{}
		}
		hs.Held[t][uint16(b)] = true
	})
	return hs, err
}

// heldFlows calls fn with the table and bucket of each TCP connection
// this host holds on a VIP.
func (a *Agent) heldFlows(fn func(t, b int)) error {
	socks, err := dumpTCP(heldStates)
	if err != nil {
		return err
	}
	a.mu.Lock()
	st := a.fstate
	a.mu.Unlock()
	for _, s := range socks {
		if t, b, ok := st.Flow(s.remote, s.local, unix.IPPROTO_TCP); ok {
			fn(t, b)
		}
	}
	return nil
}

// connections counts the TCP connections this host holds per table.
func (a *Agent) connections() (n [filter.MaxRules + 1]int, err error) {
	err = a.heldFlows(func(t, _ int) { n[t]++ })
	return n, err
}
