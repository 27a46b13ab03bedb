package agent

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nlbproject/nlb/config"
)

func TestKernelAtLeast(t *testing.T) {
	for rel, want := range map[string]bool{
		"6.6.0": true, "6.12.48+deb13-amd64": true, "7.0": true, "6.5.13": false, "5.15.0-91-generic": false, "junk": false,
	} {
		if got := kernelAtLeast(rel, "6.6"); got != want {
			t.Errorf("%s: %v, want %v", rel, got, want)
		}
	}
}

// TestPreflightDrainTimeout: a drain_timeout longer than the unit's
// TimeoutStopSec is a warning; a missing interface is a failure.
func TestPreflightDrainTimeout(t *testing.T) {
	unit := filepath.Join(t.TempDir(), "nlbd.service")
	os.WriteFile(unit, []byte("[Service]\nTimeoutStopSec=20\n"), 0o644)
	r := &config.Resolved{Interface: "nlb-no-such0", OnExit: config.ExitDrainStop, DrainTimeout: time.Minute}
	verdicts := map[string]Verdict{}
	for _, c := range Preflight(r, t.TempDir(), []string{"/nonexistent/nlbd.service", unit}) {
		verdicts[c.Name] = c.Verdict
	}
	if verdicts["drain timeout"] != Warn || verdicts["interface"] != Fail || verdicts["bpffs"] != Warn {
		t.Errorf("verdicts %v", verdicts)
	}
	r.DrainTimeout = 10 * time.Second
	for _, c := range Preflight(r, t.TempDir(), []string{unit}) {
		if c.Name == "drain timeout" && c.Verdict != Pass {
			t.Errorf("10s within 20s: %+v", c)
		}
	}
}
