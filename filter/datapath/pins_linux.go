package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Repin pins again whatever of the data plane lost its pin (someone removed
// files under the pin directory while the agent runs): without its pins,
// the programs would vanish with this process and a restarted agent could
// not adopt them. It returns the names re-pinned.
func (d *Datapath) Repin() ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pinDir == "" || d.closed {
		return nil, nil
	}
	if err := os.MkdirAll(d.pinDir, 0o700); err != nil {
		return nil, fmt.Errorf("re-create pin directory: %w", err)
	}
	var done []string
	var errs []error
	missing := func(name string) bool {
		_, err := os.Stat(filepath.Join(d.pinDir, name))
		return errors.Is(err, os.ErrNotExist)
	}
	for _, m := range d.maps() {
		if missing(m.name) {
			_ = m.m.Unpin() // forget the stale path
			if err := m.m.Pin(filepath.Join(d.pinDir, m.name)); err != nil {
				errs = append(errs, fmt.Errorf("re-pin map %s: %w", m.name, err))
				continue
			}
			done = append(done, m.name)
		}
	}
	for _, l := range []struct {
		name string
		l    link.Link
	}{{pinIngressLink, d.ingress}, {pinEgressLink, d.egress}} {
		if l.l != nil && missing(l.name) {
			_ = l.l.Unpin()
			if err := l.l.Pin(filepath.Join(d.pinDir, l.name)); err != nil {
				errs = append(errs, fmt.Errorf("re-pin link %s: %w", l.name, err))
				continue
			}
			done = append(done, l.name)
		}
	}
	return done, errors.Join(errs...)
}

// namedMap is one of the data plane's maps with its pin name.
type namedMap struct {
	name string
	m    *ebpf.Map
}

// maps lists every map of the data plane (TestMapsListed checks it
// against the object file): Repin and Detach go by it.
func (d *Datapath) maps() []namedMap {
	return []namedMap{{"nlb_active", d.objs.NlbActive}, {"nlb_counters", d.objs.NlbCounters},
		{"nlb_lease", d.objs.NlbLease}, {"nlb_states", d.objs.NlbStates}, {"nlb_hb_sources", d.objs.NlbHbSources}}
}

// RemovePinned detaches the programs a previous agent left pinned in
// pinDir and deletes the pins: what `nlbd --restore` does after a killed
// agent. A missing pinDir means nothing to do.
func RemovePinned(pinDir string) error {
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	// By path, without loading the maps: a data plane of another layout
	// (an older release's) is removed as well. A link goes when its pin
	// and our handle are gone; so does a map.
	var errs []error
	for _, name := range []string{pinIngressLink, pinEgressLink} {
		l, err := link.LoadPinnedLink(filepath.Join(pinDir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("load pinned link %s: %w", name, err))
			continue
		}
		if err := l.Unpin(); err != nil {
			errs = append(errs, err)
		}
		if err := l.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, e := range entries {
		if e.Name() == pinIngressLink || e.Name() == pinEgressLink {
			continue
		}
		if err := os.Remove(filepath.Join(pinDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove pin directory: %w", err))
	}
	return errors.Join(errs...)
}

// EnsureBPFFS mounts a bpffs at dir unless one is already mounted there
// (as Cilium does on hosts that lack /sys/fs/bpf). It reports whether it
// mounted one, so the caller can unmount exactly what it added.
func EnsureBPFFS(dir string) (mounted bool, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return false, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("create bpffs mount point: %w", err)
	}
	if err := unix.Mount("bpffs", dir, "bpf", 0, "mode=0700"); err != nil {
		return false, fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return true, nil
}
