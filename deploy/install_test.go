package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallUninstall: make install puts the binaries under PREFIX and a
// unit that runs them from there; make uninstall removes all of it but
// the configuration.
func TestInstallUninstall(t *testing.T) {
	dest := t.TempDir()
	run := func(target string) {
		cmd := exec.Command("make", "--no-print-directory", target, "DESTDIR="+dest, "PREFIX=/opt/nlbtest")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	run("install")
	unit, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/nlbd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ExecStart=/opt/nlbtest/sbin/nlbd --config", "ExecReload=/opt/nlbtest/bin/nlbctl reload"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the installed unit lacks %q", want)
		}
	}
	for _, f := range []string{"opt/nlbtest/sbin/nlbd", "opt/nlbtest/bin/nlbctl", "etc/nlb/nlb.yaml"} {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	run("uninstall")
	var left []string
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, strings.TrimPrefix(p, dest+"/"))
		}
		return nil
	})
	if len(left) != 1 || left[0] != "etc/nlb/nlb.yaml" {
		t.Errorf("after uninstall: %v, want only the configuration", left)
	}
}
