package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nlbproject/nlb/filter/datapath"
	"github.com/nlbproject/nlb/macmode/nic"
	"github.com/nlbproject/nlb/remote"
)

// DefaultBPFFS is where the agent finds (or mounts) a bpffs.
const DefaultBPFFS = "/sys/fs/bpf"

// Layout is the agent's on-disk layout: the one place that says where
// each of its files lives.
type Layout struct {
	// RunDir holds the NIC state file and the control socket (/run/nlb).
	RunDir string
	// BPFFS is where a bpffs is (or gets) mounted (/sys/fs/bpf).
	BPFFS string
	// DataDir holds what must survive a reboot: the last incarnation and
	// the voter set (/var/lib/nlb).
	DataDir string
}

// DefaultDataDir is where the agent keeps what must survive a reboot.
const DefaultDataDir = "/var/lib/nlb"

// withDefaults fills the empty fields.
func (l Layout) withDefaults() Layout {
	if l.RunDir == "" {
		l.RunDir = remote.DefaultRunDir
	}
	if l.BPFFS == "" {
		l.BPFFS = DefaultBPFFS
	}
	if l.DataDir == "" {
		l.DataDir = DefaultDataDir
	}
	return l
}

// StateFile is the write-ahead record of what setup changed on the NIC.
func (l Layout) StateFile(ifname string) string {
	return filepath.Join(l.RunDir, ifname+".state")
}

// PinDir holds the pinned data plane of the NIC.
func (l Layout) PinDir(ifname string) string {
	return filepath.Join(l.BPFFS, "nlb", ifname)
}

// Socket is the local control socket.
func (l Layout) Socket() string { return remote.SocketPath(l.RunDir) }

// Restore undoes what a killed agent left on the NIC (from its state file)
// and removes its pinned data plane (nlbd --restore). It returns a line
// saying what it did.
func Restore(l Layout, ifname string) (string, error) {
	l = l.withDefaults()
	path := l.StateFile(ifname)
	if err := nic.Restore(path, ifname); err != nil {
		return "", err
	}
	if err := datapath.RemovePinned(l.PinDir(ifname)); err != nil {
		return "", err
	}
	return fmt.Sprintf("restored %s (state file %s) and removed its pinned data plane", ifname, path), nil
}

// IncarnationFile records the last incarnation this host used on the NIC.
func (l Layout) IncarnationFile(ifname string) string {
	return filepath.Join(l.DataDir, ifname+".incarnation")
}

// VotersFile records the voter set (the members of the last epoch agreed)
// of the cluster on the NIC.
func (l Layout) VotersFile(ifname string) string {
	return filepath.Join(l.DataDir, ifname+".voters")
}

// nextIncarnation returns this start's incarnation and the one recorded
// before it (0: none). The incarnation is the wall clock in Unix ns, or
// one more than the last recorded one if the clock stepped back since
// (peers drop frames of an incarnation older than one they saw), and it
// is recorded. The record lives in the data directory, so it survives
// restarts and reboots; were it lost, the peers' echoes tell a host its
// earlier incarnation (convergence.Reincarnate). An unreadable record is
// ignored (and replaced).
func nextIncarnation(path string, now time.Time) (inc, prev uint64, err error) {
	inc = uint64(now.UnixNano())
	if last, ok := readUint(path); ok {
		prev = last
		if last >= inc {
			inc = last + 1
		}
	}
	return inc, prev, recordIncarnation(path, inc)
}

// recordIncarnation writes inc to path, atomically.
func recordIncarnation(path string, inc uint64) error {
	return recordUint(path, "incarnation", inc)
}

// readUint reads a record written by recordUint; ok is false if there is
// none or it is unreadable.
func readUint(path string) (v uint64, ok bool) {
	vs, ok := readUints(path, 1)
	return vs[0], ok
}

// readUints reads n numbers from a record; all 0 and false if there is
// none or it is unreadable.
func readUints(path string, n int) ([]uint64, bool) {
	out := make([]uint64, n)
	b, err := os.ReadFile(path)
	f := strings.Fields(string(b))
	if err != nil || len(f) != n {
		return out, false
	}
	for i := range f {
		if out[i], err = strconv.ParseUint(f[i], 10, 64); err != nil {
			return make([]uint64, n), false
		}
	}
	return out, true
}

// readVoters reads the voter set and the epoch it was agreed in (0 0:
// none recorded, or an unreadable record).
func readVoters(path string) (epoch, voters uint64) {
	v, _ := readUints(path, 2)
	return v[0], v[1]
}

// recordVoters records the voter set agreed in epoch.
func recordVoters(path string, epoch, voters uint64) error {
	return recordUint(path, "voters", epoch, voters)
}

// recordUint writes vs to path, atomically.
func recordUint(path, what string, vs ...uint64) error {
	var s []string
	for _, v := range vs {
		s = append(s, strconv.FormatUint(v, 10))
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.Join(s, " ")+"\n"), 0o600); err != nil {
		return fmt.Errorf("record %s: %w", what, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("record %s: %w", what, err)
	}
	return nil
}
