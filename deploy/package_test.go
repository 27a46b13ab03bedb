//go:build linux

// Package deploy holds what installs nlb on a host (the systemd unit, the
// nfpm packaging and its maintainer scripts) and the test that installs
// the package.
package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nlbproject/nlb/internal/netns"
)

// mayInstall skips a test that installs the nlb package unless this
// machine is root, has dpkg, and has no nlb installed (by the package or
// by make install PREFIX=/usr) that the test would overwrite.
func mayInstall(t *testing.T) {
	t.Helper()
	netns.RequireRoot(t)
	if _, err := exec.LookPath("dpkg"); err != nil {
		t.Skip("dpkg not found: not a Debian-based machine")
	}
	if exec.Command("dpkg", "-s", "nlb").Run() == nil {
		t.Skip("the nlb package is installed on this machine: not touching it")
	}
	if _, err := os.Stat("/usr/sbin/nlbd"); err == nil {
		t.Skip("/usr/sbin/nlbd exists outside a package (make install PREFIX=/usr?): not touching it")
	}
}

// TestDebianPackage builds the packages (make package), installs the .deb
// with dpkg -i on this machine, checks the files, the man pages, the unit
// and nlbd --version, then purges it and checks that nothing is left.
func TestDebianPackage(t *testing.T) {
	mayInstall(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
		}
		return out.String()
	}
	run("make", "--no-print-directory", "package")
	debs, _ := filepath.Glob(filepath.Join(root, "dist", "*.deb"))
	rpms, _ := filepath.Glob(filepath.Join(root, "dist", "*.rpm"))
	if len(debs) != 1 || len(rpms) != 1 {
		t.Fatalf("make package left %v and %v, want one .deb and one .rpm", debs, rpms)
	}
	t.Cleanup(func() { exec.Command("dpkg", "--purge", "nlb").Run() })
	run("dpkg", "-i", debs[0])

	for path, mode := range map[string]os.FileMode{
		"/usr/sbin/nlbd":                                   0o755,
		"/usr/bin/nlbctl":                                  0o755,
		"/usr/lib/systemd/system/nlbd.service":             0o644,
		"/etc/nlb/nlb.yaml":                                0o600,
		"/etc/nlb":                                         0o700 | os.ModeDir,
		"/var/lib/nlb":                                     0o700 | os.ModeDir,
		"/usr/share/man/man8/nlbd.8":                       0o644,
		"/usr/share/man/man1/nlbctl.1":                     0o644,
		"/usr/share/man/man1/nlbctl-drainstop.1":           0o644,
		"/usr/share/bash-completion/completions/nlbctl":    0o644,
		"/usr/share/zsh/vendor-completions/_nlbctl":        0o644,
		"/usr/share/fish/vendor_completions.d/nlbctl.fish": 0o644,
		"/usr/share/doc/nlb/operations.md":                 0o644,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("installed: %v", err)
			continue
		}
		if fi.Mode()&(os.ModePerm|os.ModeDir) != mode {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), mode)
		}
	}
	unit, _ := os.ReadFile("/usr/lib/systemd/system/nlbd.service")
	if !strings.Contains(string(unit), "ExecStart=/usr/sbin/nlbd --config /etc/nlb/nlb.yaml") {
		t.Errorf("the unit does not run /usr/sbin/nlbd:\n%s", unit)
	}
	man, _ := os.ReadFile("/usr/share/man/man8/nlbd.8")
	if !bytes.Contains(man, []byte(".TH \"NLBD\" \"8\"")) || !bytes.Contains(man, []byte("--check-config")) {
		t.Errorf("nlbd.8 is not a man page of nlbd:\n%.300s", man)
	}
	deb := filepath.Base(debs[0])
	want := strings.TrimSuffix(strings.TrimPrefix(deb, "nlb_"), "-1_amd64.deb")
	if out := run("/usr/sbin/nlbd", "--version"); strings.TrimSpace(out) != "nlbd version "+want {
		t.Errorf("nlbd --version: %q, want the package's version %s", out, want)
	}
	if out := run("/usr/bin/nlbctl", "version"); !strings.HasPrefix(out, "nlbctl "+want+" ") {
		t.Errorf("nlbctl version: %q, want %s", out, want)
	}
	if out := run("dpkg-query", "-W", "-f=${Status} ${Version}", "nlb"); out != "install ok installed "+want+"-1" {
		t.Errorf("dpkg-query: %q", out)
	}

	run("dpkg", "--purge", "nlb")
	for _, path := range []string{"/usr/sbin/nlbd", "/usr/bin/nlbctl", "/usr/lib/systemd/system/nlbd.service",
		"/etc/nlb/nlb.yaml", "/usr/share/man/man8/nlbd.8", "/usr/share/doc/nlb", "/var/lib/nlb"} {
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s is left after dpkg --purge", path)
		}
	}
}
