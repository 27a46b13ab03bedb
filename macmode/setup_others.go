//go:build !linux

package macmode

import (
	"errors"
	"net/netip"
)

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
	VIPs      []netip.Addr
	StateFile string
}

var errUnsupported = errors.New("macmode: NIC setup needs Linux")

// Setup is not supported on this system.
func Setup(Config) error { return errUnsupported }

// Restore is not supported on this system.
func Restore(string) error { return errUnsupported }
