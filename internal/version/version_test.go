package version

import (
	"strings"
	"testing"
)

// TestString: the stamped version wins; without one, a test binary still
// says something (devel, or the module version) and never "".
func TestString(t *testing.T) {
	Version = "v1.2.3"
	if got := String(); got != "v1.2.3" {
		t.Errorf("stamped: %q", got)
	}
	Version = ""
	if got := String(); got == "" || strings.HasPrefix(got, "+") {
		t.Errorf("unstamped: %q", got)
	}
	if !strings.HasPrefix(Go(), "go") {
		t.Errorf("Go() = %q", Go())
	}
}
