package agent

import (
	"time"

	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/convergence"
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
	socks, err := dumpTCP4(heldStates)
	if err != nil {
		return hs, err
	}
	a.mu.Lock()
	st := a.fstate
	a.mu.Unlock()
	for _, s := range socks {
		t, b, ok := st.Flow(s.remote, s.local, unix.IPPROTO_TCP)
		if !ok {
			continue
		}
		if hs.Held[t] == nil {
			hs.Held[t] = map[uint16]bool{}
		}
		hs.Held[t][uint16(b)] = true
	}
	return hs, nil
}
