package agent

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/filter/datapath"
)

// UnitPaths are where nlbd.service is looked for, most specific first.
var UnitPaths = []string{"/etc/systemd/system/nlbd.service", "/usr/lib/systemd/system/nlbd.service", "/lib/systemd/system/nlbd.service"}

// Preflight checks, without changing anything, that this host can run the
// configuration r: kernel, interface, bpffs, capabilities, the eBPF
// programs (loaded into the kernel and released, never attached), and the
// drain timeout against the unit's stop timeout.
func Preflight(r *config.Resolved, bpffs string, unitPaths []string) []Check {
	var cs []Check
	add := func(name string, v Verdict, format string, args ...any) {
		cs = append(cs, Check{Name: name, Verdict: v, Detail: fmt.Sprintf(format, args...)})
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		add("kernel", Fail, "uname: %v", err)
	} else if rel := unix.ByteSliceToString(uts.Release[:]); kernelAtLeast(rel, datapath.MinKernel) {
		add("kernel", Pass, "%s (the data plane needs %s or later: TCX)", rel, datapath.MinKernel)
	} else {
		add("kernel", Fail, "%s is older than %s: the data plane attaches with TCX (docs/operations.md, supported systems)", rel, datapath.MinKernel)
	}
	if ifi, err := net.InterfaceByName(r.Interface); err != nil {
		add("interface", Fail, "%s: %v", r.Interface, err)
	} else if ifi.Flags&net.FlagUp == 0 {
		add("interface", Warn, "%s exists but is down", r.Interface)
	} else {
		add("interface", Pass, "%s, MTU %d, MAC %s", r.Interface, ifi.MTU, ifi.HardwareAddr)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(bpffs, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		add("bpffs", Pass, "mounted at %s", bpffs)
	} else {
		add("bpffs", Warn, "none at %s: nlbd will mount one (needs CAP_SYS_ADMIN)", bpffs)
	}
	missing, err := missingCaps()
	switch {
	case err != nil:
		add("capabilities", Warn, "%v", err)
	case len(missing) > 0:
		add("capabilities", Fail, "missing %s (run as root, or with the unit's AmbientCapabilities)", strings.Join(missing, ", "))
	default:
		add("capabilities", Pass, "CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN")
	}
	if len(missing) == 0 {
		if dp, err := datapath.Load(datapath.DatapathOptions{}); err != nil {
			add("ebpf", Fail, "the kernel refuses the data plane: %v", err)
		} else {
			dp.Close()
			add("ebpf", Pass, "the kernel's verifier accepts the data plane (loaded and released, not attached)")
		}
	}
	add("keys", Pass, "key files readable and private (host.allow_readable_key_files: %v)", r.Raw.Host.AllowReadableKeyFiles)
	for _, p := range unitPaths {
		stop, ok, err := unitStopTimeout(p)
		if err != nil || !ok {
			continue
		}
		switch {
		case r.OnExit != config.ExitDrainStop:
			add("drain timeout", Pass, "on_exit %s: no drain at exit", r.OnExit)
		case r.DrainTimeout == 0 || r.DrainTimeout > stop:
			add("drain timeout", Warn, "drain_timeout %v is longer than %s's TimeoutStopSec %v: the agent asks systemd for more time while it drains (EXTEND_TIMEOUT_USEC), but a shorter drain_timeout is safer",
				durOrUnbounded(r.DrainTimeout), p, stop)
		default:
			add("drain timeout", Pass, "drain_timeout %v within %s's TimeoutStopSec %v", r.DrainTimeout, p, stop)
		}
		return cs
	}
	add("drain timeout", Pass, "no nlbd.service installed: nothing to compare drain_timeout %v with", durOrUnbounded(r.DrainTimeout))
	return cs
}

func durOrUnbounded(d time.Duration) string {
	if d == 0 {
		return "0 (unbounded)"
	}
	return d.String()
}

// capability bits (linux/capability.h).
var neededCaps = []struct {
	name string
	bit  uint
}{{"CAP_NET_ADMIN", 12}, {"CAP_NET_RAW", 13}, {"CAP_SYS_ADMIN", 21}, {"CAP_PERFMON", 38}, {"CAP_BPF", 39}}

// missingCaps reads this process's effective capabilities.
func missingCaps() ([]string, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		hex, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("CapEff %q: %v", hex, err)
		}
		var out []string
		for _, c := range neededCaps {
			if eff&(1<<c.bit) == 0 {
				out = append(out, c.name)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("no CapEff in /proc/self/status")
}

// unitStopTimeout reads TimeoutStopSec from a unit file (ok false if the
// file does not exist or does not set it: systemd's default, 90 s, is
// then reported as set).
func unitStopTimeout(path string) (time.Duration, bool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false, err
	}
	stop := 90 * time.Second
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "TimeoutStopSec=")
		if !ok {
			continue
		}
		if d, err := time.ParseDuration(v); err == nil {
			stop = d
		} else if s, err := strconv.Atoi(v); err == nil {
			stop = time.Duration(s) * time.Second
		}
	}
	return stop, true, nil
}
