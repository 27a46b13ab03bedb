package macmode

// Mode is the cluster's MAC mode.
type Mode string

const (
	Unicast   Mode = "unicast"
	Multicast Mode = "multicast"
	IGMP      Mode = "igmp"
)
