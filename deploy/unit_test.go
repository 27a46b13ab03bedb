package deploy

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestUnitHardened: systemd-analyze scores the unit's exposure at most
// 5.0 (of 10) offline, and every hardening exception is explained.
func TestUnitHardened(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("systemd-analyze not found (make deps installs it)")
		}
		t.Skip("systemd-analyze not found: make deps installs it")
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=50", "nlbd.service").CombinedOutput()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	last := lines[len(lines)-1]
	t.Log(last)
	if err != nil {
		t.Fatalf("exposure above 5.0: %s\n%s", last, out)
	}
	unit, _ := os.ReadFile("nlbd.service")
	for _, want := range []string{"Type=notify", "WatchdogSec=", "ExecReload=/usr/bin/nlbctl reload", "ProtectSystem=strict", "StateDirectory=nlb"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
}
