package config

import (
	"crypto/sha256"
	"fmt"

	"github.com/nlbproject/nlb/filter"
)

// Digest is a digest of the settings every host must share: hosts whose
// digests differ are not admitted to each other's cluster. The key file's
// path and the host section are not in it; the key itself is checked by
// every heartbeat's tag.
func (r *Resolved) Digest() [16]byte {
	h := sha256.New()
	fmt.Fprintf(h, "nlb cluster v1\nname=%s\nvips=%v\nmode=%s\nperiod=%d\ntolerance=%d\nseed=%x\nremote=%d\nquorum=%d\ngrace=%d\n",
		r.Name, r.VIPs, r.MACMode, r.Period, r.LossTolerance, r.Seed, r.RemotePort, r.QuorumVoters, r.Grace)
	if r.Prefix6 != filter.DefaultPrefix6 { // the default adds nothing: digests of older releases stay equal
		fmt.Fprintf(h, "prefix6=%d\n", r.Prefix6)
	}
	if !r.Quorum {
		fmt.Fprintf(h, "quorum=off\n") // hosts that treat partitions differently must not mix
	}
	for i, rule := range r.Rules {
		fmt.Fprintf(h, "rule=%s|%s|%s|%s|%s\n", r.RuleNames[i], rule, rule.Protocol, rule.Mode, rule.Affinity)
	}
	var d [16]byte
	copy(d[:], h.Sum(nil))
	return d
}
