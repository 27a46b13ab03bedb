package deploy

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nlbproject/nlb/internal/netns"
)

// TestReadmeTryIt runs README.md's "Try it" block as written (in bash,
// stopping at the first failing command), as a newcomer would after a
// fresh clone: every command must succeed.
func TestReadmeTryIt(t *testing.T) {
	netns.RequireRoot(t) // nlbd --check-config loads the eBPF programs
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "## Try it\n")
	if !ok {
		t.Fatal("README.md has no \"## Try it\" section")
	}
	_, block, ok := strings.Cut(after, "```sh\n")
	block, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("README.md's Try it has no sh block")
	}
	cmd := exec.Command("bash", "-euo", "pipefail", "-c", block)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README.md's Try it failed: %v\n%s", err, out)
	}
	for _, want := range []string{"config ok", "PASS  ebpf", "accepted  by host"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in the output:\n%s", want, out)
		}
	}
}
