package nic

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unsafe"

	"github.com/nlbproject/nlb/macmode"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Setup puts the NIC in the mode. It is all-or-nothing: if a step fails,
// the steps done are undone and the error names the failed step. The
// changes:
//
//	unicast:   arp_notify=1 and ndisc_notify=1 on the NIC (the host's
//	           addresses are announced at the new MAC, and at the old one
//	           on restore), NIC MAC → 02:bf:W:X:Y:Z (with the NIC up, so
//	           that each host keeps its own IPv6 link-local address), VIPs
//	           on the NIC (IPv6 ones without DAD)
//	multicast: arp_ignore=1 and arp_announce=2 on the NIC (the agent answers
//	           ARP for the VIPs), 03:bf:W:X:Y:Z added to the NIC's multicast
//	           list, VIPs on lo
//	igmp:      the same sysctls, group 239.255.Y.Z joined on the NIC
//	           (persistently, with an autojoin address) and, with IPv6
//	           VIPs, group ff05::bf:WX:YZ (MLD), VIPs on lo
func Setup(cfg Config) (err error) {
	if len(cfg.VIPs) == 0 {
		return errors.New("macmode: no VIPs")
	}
	if _, err := os.Stat(cfg.StateFile); err == nil {
		return fmt.Errorf("macmode: state file %s exists: restore first (nlbd --restore)", cfg.StateFile)
	}
	link, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		return fmt.Errorf("macmode: interface %s: %w", cfg.Interface, err)
	}
	st := &State{Interface: cfg.Interface, Mode: cfg.Mode, VIPs: vipStrings(cfg.VIPs)}
	defer func() {
		if err != nil {
			if uerr := undo(st); uerr != nil {
				err = fmt.Errorf("%w (and undoing the earlier steps failed: %v; state kept in %s)", err, uerr, cfg.StateFile)
			} else {
				os.Remove(cfg.StateFile)
			}
		}
	}()
	step := 0
	do := func(name string, c Change, apply func() error) error {
		step++
		if cfg.failAt == step {
			return fmt.Errorf("macmode: step %d (%s): injected failure", step, name)
		}
		// Write ahead: the state file lists the change before it is made.
		st.Changes = append(st.Changes, c)
		if err := writeState(cfg.StateFile, st); err != nil {
			st.Changes = st.Changes[:len(st.Changes)-1]
			return fmt.Errorf("macmode: step %d (%s): %w", step, name, err)
		}
		if err := apply(); err != nil {
			st.Changes = st.Changes[:len(st.Changes)-1]
			_ = writeState(cfg.StateFile, st)
			return fmt.Errorf("macmode: step %d (%s): %w", step, name, err)
		}
		return nil
	}
	sysctl := func(key, value string) error {
		path := fmt.Sprintf("/proc/sys/net/%s", strings.ReplaceAll(key, ".", "/"))
		old, err := readSysctl(path)
		if err != nil {
			return err
		}
		if old == value {
			return nil
		}
		return do("sysctl "+key, Change{Kind: "sysctl", Link: cfg.Interface, Value: path + "=" + value, Old: old},
			func() error { return writeSysctl(path, value) })
	}
	addAddr := func(on string, a netip.Addr) error {
		l, err := netlink.LinkByName(on)
		if err != nil {
			return err
		}
		p := netip.PrefixFrom(a, a.BitLen())
		if has, err := hasAddr(l, p); err != nil || has {
			return err // already there: not ours to remove later
		}
		// Every host has the VIPs: duplicate address detection would
		// find the others and disable an IPv6 VIP.
		flags := 0
		if a.Is6() {
			flags = unix.IFA_F_NODAD
		}
		return do("address "+p.String()+" on "+on, Change{Kind: "addr", Link: on, Value: p.String()},
			func() error { return addrChange(l, p, flags, true) })
	}
	vip := cfg.VIPs[0]
	switch cfg.Mode {
	case macmode.Unicast:
		mac, err := macmode.UnicastMAC(vip)
		if err != nil {
			return err
		}
		// The host's own addresses move to the new MAC with the NIC (and
		// back on restore): with arp_notify and ndisc_notify the kernel
		// announces each of them (IPv4 and IPv6) when the MAC changes, so
		// neighbours that have one cached do not keep sending to the old
		// MAC for seconds. IPv6 stays on: the MAC changes with the NIC up,
		// so each host keeps the link-local address of its own MAC (one
		// made from the shared MAC would fail duplicate address detection
		// on every host but one; docs/operations.md). The caller
		// attaches the data plane first (the agent does; so does
		// TestClusterARP), so that the announcement leaves with the masked
		// source: a switch must never learn the cluster MAC.
		if err := sysctl("ipv4.conf."+cfg.Interface+".arp_notify", "1"); err != nil {
			return err
		}
		if err := sysctl("ipv6.conf."+cfg.Interface+".ndisc_notify", "1"); err != nil {
			return err
		}
		old := link.Attrs().HardwareAddr.String()
		if old != mac.String() {
			if err := do("MAC "+mac.String(), Change{Kind: "mac", Link: cfg.Interface, Value: mac.String(), Old: old},
				func() error { return netlink.LinkSetHardwareAddr(link, mac) }); err != nil {
				return err
			}
		}
		for _, v := range cfg.VIPs {
			if err := addAddr(cfg.Interface, v); err != nil {
				return err
			}
		}
	case macmode.Multicast, macmode.IGMP:
		if err := sysctl("ipv4.conf."+cfg.Interface+".arp_ignore", "1"); err != nil {
			return err
		}
		if err := sysctl("ipv4.conf."+cfg.Interface+".arp_announce", "2"); err != nil {
			return err
		}
		if cfg.Mode == macmode.Multicast {
			mac, err := macmode.MulticastMAC(vip)
			if err != nil {
				return err
			}
			if err := do("multicast MAC "+mac.String(), Change{Kind: "maddr", Link: cfg.Interface, Value: mac.String()},
				func() error { return multicastMAC(cfg.Interface, mac, true) }); err != nil {
				return err
			}
		} else {
			g, err := macmode.IGMPGroup(vip)
			if err != nil {
				return err
			}
			p := netip.PrefixFrom(g, 32)
			if err := do("IGMP group "+g.String(), Change{Kind: "group", Link: cfg.Interface, Value: p.String()},
				func() error { return addrChange(link, p, unix.IFA_F_MCAUTOJOIN, true) }); err != nil {
				return err
			}
			if slices.ContainsFunc(cfg.VIPs, netip.Addr.Is6) {
				g6, err := macmode.MLDGroup(vip)
				if err != nil {
					return err
				}
				p := netip.PrefixFrom(g6, 128)
				if err := do("MLD group "+g6.String(), Change{Kind: "group", Link: cfg.Interface, Value: p.String()},
					func() error { return addrChange(link, p, unix.IFA_F_MCAUTOJOIN, true) }); err != nil {
					return err
				}
			}
		}
		for _, v := range cfg.VIPs {
			if err := addAddr("lo", v); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("macmode: unknown mode %q", cfg.Mode)
	}
	st.Complete = true
	if err := writeState(cfg.StateFile, st); err != nil {
		return fmt.Errorf("macmode: %w", err)
	}
	return nil
}

func vipStrings(vips []netip.Addr) []string {
	out := make([]string, len(vips))
	for i, v := range vips {
		out[i] = v.String()
	}
	return out
}

// Adopt is Setup for an agent that restarts: if the state file records a
// complete setup of the same interface, mode and VIPs (a previous agent's,
// which exited keeping the NIC or was killed), it is adopted as is and
// nothing changes on the NIC (adopted is true). Otherwise what the file
// records is undone and Setup runs.
func Adopt(cfg Config) (adopted bool, err error) {
	b, err := os.ReadFile(cfg.StateFile)
	if err == nil {
		st, err := ParseState(b, cfg.Interface)
		if err != nil {
			return false, stateFileError(cfg.StateFile, err)
		}
		if st.Complete && st.Mode == cfg.Mode && slices.Equal(st.VIPs, vipStrings(cfg.VIPs)) {
			return true, nil
		}
		if err := Restore(cfg.StateFile, cfg.Interface); err != nil {
			return false, err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("macmode: read state: %w", err)
	}
	return false, Setup(cfg)
}

// Restore undoes what the state file of interface ifname records (after a
// clean stop or a crash) and removes it. A missing state file means
// nothing to undo; a corrupt one, or one for another interface, is an
// error that changes nothing.
func Restore(stateFile, ifname string) error {
	b, err := os.ReadFile(stateFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("macmode: read state: %w", err)
	}
	st, err := ParseState(b, ifname)
	if err != nil {
		return stateFileError(stateFile, err)
	}
	if err := undo(st); err != nil {
		return err
	}
	return os.Remove(stateFile)
}

// undo reverts changes in reverse order; it keeps going after an error
// and reports all of them.
func undo(st *State) error {
	var errs []error
	for i := len(st.Changes) - 1; i >= 0; i-- {
		c := st.Changes[i]
		var err error
		switch c.Kind {
		case "sysctl":
			path, _, _ := strings.Cut(c.Value, "=")
			err = writeSysctl(path, c.Old)
		case "mac":
			var l netlink.Link
			if l, err = netlink.LinkByName(c.Link); err == nil {
				var mac net.HardwareAddr
				if mac, err = net.ParseMAC(c.Old); err == nil {
					err = netlink.LinkSetHardwareAddr(l, mac)
				}
			}
		case "addr", "group":
			var l netlink.Link
			if l, err = netlink.LinkByName(c.Link); err == nil {
				var p netip.Prefix
				if p, err = netip.ParsePrefix(c.Value); err == nil {
					err = addrChange(l, p, 0, false)
				}
				if errors.Is(err, unix.EADDRNOTAVAIL) {
					err = nil // already gone
				}
			}
		case "maddr":
			var mac net.HardwareAddr
			if mac, err = net.ParseMAC(c.Value); err == nil {
				err = multicastMAC(c.Link, mac, false)
				if errors.Is(err, unix.ENOENT) {
					err = nil
				}
			}
		default:
			err = fmt.Errorf("unknown change %q", c.Kind)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("undo %s %s on %s: %w", c.Kind, c.Value, c.Link, err))
		}
	}
	return errors.Join(errs...)
}

func writeState(path string, st *State) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readSysctl(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSysctl(path, value string) error {
	return os.WriteFile(path, []byte(value), 0o644)
}

func hasAddr(l netlink.Link, p netip.Prefix) (bool, error) {
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if ap, ok := netip.AddrFromSlice(a.IP.To4()); ok && ap == p.Addr() {
			return true, nil
		}
	}
	return false, nil
}

func addrChange(l netlink.Link, p netip.Prefix, flags int, add bool) error {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}, Flags: flags}
	if add {
		return netlink.AddrAdd(l, a)
	}
	return netlink.AddrDel(l, a)
}

// multicastMAC adds or removes a link-layer multicast address on a NIC
// (SIOCADDMULTI / SIOCDELMULTI, as `ip maddr` does; netlink has no
// message for it). The address stays until removed, whoever holds it.
func multicastMAC(ifname string, mac net.HardwareAddr, add bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// struct ifreq: name[16], then struct sockaddr ifr_hwaddr
	// (sa_family u16, sa_data[14]).
	var ifr [40]byte
	copy(ifr[:unix.IFNAMSIZ-1], ifname)
	*(*uint16)(unsafe.Pointer(&ifr[16])) = unix.AF_UNSPEC
	copy(ifr[18:24], mac)
	req := uintptr(unix.SIOCADDMULTI)
	if !add {
		req = unix.SIOCDELMULTI
	}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(&ifr[0]))); errno != 0 {
		return errno
	}
	return nil
}

// stateFileError explains a state file that cannot be trusted.
func stateFileError(path string, err error) error {
	return fmt.Errorf("macmode: state file %s cannot be used, nothing was changed: %w (it records what nlbd changed on the NIC; see docs/operations.md, \"A corrupt state file\")", path, err)
}
