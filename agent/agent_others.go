//go:build !linux

package agent

import (
	"context"
	"errors"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
)

// Run needs Linux (eBPF, AF_PACKET, netlink).
func (a *Agent) Run(ctx context.Context) error { return errors.New("nlbd runs on Linux only") }

func (a *Agent) scan() (convergence.HeldScan, error) {
	return convergence.HeldScan{}, errors.New("held-flow scan needs Linux")
}

func (a *Agent) packetTotals() (accepted, dropped uint64) { return 0, 0 }

func (a *Agent) ruleTotals() (t [filter.MaxRules + 1]ruleTotal) { return t }

func (a *Agent) connections() (n [filter.MaxRules + 1]int, err error) {
	return n, errors.New("connections are counted on Linux only")
}

func monotonicUsec() int64 { return 0 }

// UnitPaths are where nlbd.service is looked for.
var UnitPaths []string

// Preflight needs Linux.
func Preflight(*config.Resolved, string, []string) []Check {
	return []Check{{Name: "kernel", Verdict: Fail, Detail: "nlbd runs on Linux only"}}
}
