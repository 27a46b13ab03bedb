//go:build linux

package main

import (
	"bytes"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	inetns "github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/macmode"
	"github.com/nlbproject/nlb/macmode/nic"
)

// TestRestore: nlbd --restore undoes a setup left behind by a dead agent.
func TestRestore(t *testing.T) {
	inetns.RequireRoot(t)
	ns := inetns.New(t, "rst")
	peer := inetns.New(t, "rstp")
	ifname := inetns.Prefix + "rst"
	inetns.Veth(t, ns, ifname, "198.18.0.1/24", peer, inetns.Prefix+"rstx", "")
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, bytes.Repeat([]byte("k"), 32), 0o600)
	b, _ := os.ReadFile("../../examples/host1.yaml")
	cfgText := strings.Replace(strings.Replace(string(b), "/etc/nlb/cluster.key", key, 1), "interface: eth0", "interface: "+ifname, 1)
	cfgPath := filepath.Join(dir, "nlb.yaml")
	os.WriteFile(cfgPath, []byte(cfgText), 0o600)

	link := func() string {
		out, _ := exec.Command("ip", "-n", ns.Name, "link", "show", "dev", ifname).CombinedOutput()
		return string(out)
	}
	before := link()
	state := filepath.Join(dir, ifname+".state")
	if err := ns.Do(func() error {
		return nic.Setup(nic.Config{Mode: macmode.Unicast, Interface: ifname,
			VIPs: []netip.Addr{netip.MustParseAddr("198.18.0.100")}, StateFile: state})
	}); err != nil {
		t.Fatal(err)
	}
	if link() == before {
		t.Fatal("setup changed nothing")
	}
	var out, errb bytes.Buffer
	var code int
	ns.Do(func() error {
		code = run([]string{"--config", cfgPath, "--restore", "--state-dir", dir}, &out, &errb)
		return nil
	})
	if code != 0 || !strings.Contains(out.String(), "restored") {
		t.Fatalf("exit %d: %s%s", code, out.String(), errb.String())
	}
	if after := link(); after != before {
		t.Fatalf("after --restore:\n%s\nbefore:\n%s", after, before)
	}
	// Nothing to restore is not an error.
	ns.Do(func() error {
		code = run([]string{"--config", cfgPath, "--restore", "--state-dir", dir}, &out, &errb)
		return nil
	})
	if code != 0 {
		t.Fatalf("second --restore: exit %d: %s", code, errb.String())
	}
}
