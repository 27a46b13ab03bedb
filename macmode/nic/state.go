package nic

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nlbproject/nlb/macmode"
)

// State is the state file: every change setup made, with the value it
// replaced, in the order made. Teardown undoes them in reverse.
type State struct {
	Interface string       `json:"interface"`
	Mode      macmode.Mode `json:"mode"`
	VIPs      []string     `json:"vips"`
	Changes   []Change     `json:"changes"`
	// Complete is set once every step is done.
	Complete bool `json:"complete"`
}

// Change is one undoable change.
type Change struct {
	Kind  string `json:"kind"` // "mac", "addr", "group", "maddr", "sysctl"
	Link  string `json:"link"` // interface the change is on
	Value string `json:"value"`
	Old   string `json:"old,omitempty"`
}

// sysctlPaths are the only sysctls setup changes on interface ifname; a
// state file naming another path is refused.
func sysctlPaths(ifname string) []string {
	return []string{
		"/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6",
		"/proc/sys/net/ipv4/conf/" + ifname + "/arp_ignore",
		"/proc/sys/net/ipv4/conf/" + ifname + "/arp_announce",
		"/proc/sys/net/ipv4/conf/" + ifname + "/arp_notify",
		"/proc/sys/net/ipv6/conf/" + ifname + "/ndisc_notify",
	}
}

// ParseState decodes and validates a state file for interface ifname:
// every change must be one setup makes, on ifname (or lo, for VIPs), with
// values of the right form. Anything else is an error that names the
// problem: the file is corrupt or was not written for this host, and
// undoing it could write elsewhere (docs/operations.md, "A corrupt state
// file").
func ParseState(b []byte, ifname string) (*State, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var st State
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("not a state file: %w", err)
	}
	if st.Interface != ifname {
		return nil, fmt.Errorf("written for interface %q, configured %q", st.Interface, ifname)
	}
	switch st.Mode {
	case macmode.Unicast, macmode.Multicast, macmode.IGMP:
	default:
		return nil, fmt.Errorf("unknown mode %q", st.Mode)
	}
	for _, v := range st.VIPs {
		if _, err := netip.ParseAddr(v); err != nil {
			return nil, fmt.Errorf("vip %q is not an address", v)
		}
	}
	for i, c := range st.Changes {
		if err := checkChange(c, ifname); err != nil {
			return nil, fmt.Errorf("change %d (%s %q on %q): %w", i, c.Kind, c.Value, c.Link, err)
		}
	}
	return &st, nil
}

func checkChange(c Change, ifname string) error {
	onNIC := c.Link == ifname
	switch c.Kind {
	case "sysctl":
		path, value, ok := strings.Cut(c.Value, "=")
		if !ok || !onNIC {
			return fmt.Errorf("a sysctl change is path=value on %s", ifname)
		}
		known := false
		for _, p := range sysctlPaths(ifname) {
			known = known || p == path
		}
		if !known {
			return fmt.Errorf("%s is not a sysctl the agent sets", path)
		}
		for _, v := range []string{value, c.Old} {
			if _, err := strconv.ParseUint(v, 10, 8); err != nil {
				return fmt.Errorf("sysctl value %q is not a small number", v)
			}
		}
	case "mac":
		if !onNIC {
			return fmt.Errorf("a MAC change is on %s", ifname)
		}
		for _, v := range []string{c.Value, c.Old} {
			if m, err := net.ParseMAC(v); err != nil || len(m) != 6 {
				return fmt.Errorf("%q is not an Ethernet MAC", v)
			}
		}
	case "maddr":
		if m, err := net.ParseMAC(c.Value); err != nil || len(m) != 6 || !onNIC {
			return fmt.Errorf("a multicast MAC on %s", ifname)
		}
	case "addr", "group":
		if !onNIC && c.Link != "lo" {
			return fmt.Errorf("an address is on %s or lo", ifname)
		}
		if _, err := netip.ParsePrefix(c.Value); err != nil {
			return fmt.Errorf("%q is not an address with prefix length", c.Value)
		}
	default:
		return fmt.Errorf("unknown change")
	}
	return nil
}
