// Package nic puts one host's NIC on the cluster through netlink (cluster
// MAC, VIPs, sysctls) and takes it off again exactly, through a
// write-ahead state file that survives a crash. The MAC values themselves
// are package macmode's.
package nic

import (
	"net/netip"

	"github.com/nlbproject/nlb/macmode"
)

// Config says how to put one host's NIC on the cluster.
type Config struct {
	Mode      macmode.Mode
	Interface string
	VIPs      []netip.Addr // the first is the primary VIP
	// StateFile records what setup changed, before it changes it, so that
	// Restore can undo it after a crash (the agent uses
	// /run/nlb/<ifname>.state).
	StateFile string

	// failAt, in tests, makes step n (1-based) fail after the steps before
	// it were done.
	failAt int
}
