package macmode

import "net/netip"

// Mode is the cluster's MAC mode.
type Mode string

const (
	Unicast   Mode = "unicast"
	Multicast Mode = "multicast"
	IGMP      Mode = "igmp"
)

// Config says how to put one host's NIC on the cluster.
type Config struct {
	Mode      Mode
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
