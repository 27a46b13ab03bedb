package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/nlbproject/nlb/internal/version"
)

func testConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, bytes.Repeat([]byte("x"), 32), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("../../examples/host1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "host1.yaml")
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), "/etc/nlb/cluster.key", key, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runCtl(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestFilterExactlyOneHost(t *testing.T) {
	cfg := testConfig(t)
	perHost := map[uint8]int{}
	for port := 40000; port < 40300; port++ {
		code, out, errs := runCtl("filter", "--config", cfg, "--members", "1,2,3",
			"--client", "198.19.0.5:"+itoa(port), "--vip", "198.18.0.100:80", "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		var res filterResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		if len(res.Accepted) != 1 || res.Rule != "http" {
			t.Fatalf("port %d: %+v", port, res)
		}
		perHost[res.Accepted[0]]++
	}
	for id := uint8(1); id <= 3; id++ {
		if perHost[id] < 60 {
			t.Fatalf("host %d took %d of 300 flows: %v", id, perHost[id], perHost)
		}
	}
}

// TestFilterIPv6: offline filter of IPv6 flows to a dual-stack config's
// IPv6 VIP: --json names exactly one host for each and the all-VIP rule;
// a client and VIP of different families is a usage error (exit 2).
func TestFilterIPv6(t *testing.T) {
	cfg := testConfig(t)
	b, _ := os.ReadFile(cfg)
	os.WriteFile(cfg, []byte(strings.Replace(string(b), "vips: [198.18.0.100]", `vips: [198.18.0.100, "2001:2::100"]`, 1)), 0o600)
	perHost := map[uint8]int{}
	for port := 40000; port < 40150; port++ {
		code, out, errs := runCtl("filter", "--config", cfg, "--members", "1,2,3",
			"--client", "[2001:2::5]:"+itoa(port), "--vip", "[2001:2::100]:80", "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		var res filterResult
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatal(err)
		}
		if len(res.Accepted) != 1 || res.Rule != "http" || !strings.Contains(res.Flow, "[2001:2::100]:80") {
			t.Fatalf("port %d: %+v", port, res)
		}
		perHost[res.Accepted[0]]++
	}
	if len(perHost) != 3 {
		t.Errorf("IPv6 flows on hosts %v, want all three", perHost)
	}
	if code, _, errs := runCtl("filter", "--config", cfg, "--members", "1", "--client", "198.19.0.5:1", "--vip", "[2001:2::100]:80"); code != exitUsage || !strings.Contains(errs, "one IP family") {
		t.Errorf("mixed families: exit %d, %s", code, errs)
	}
}

func TestFilterTableOutput(t *testing.T) {
	code, out, _ := runCtl("filter", "--config", testConfig(t), "--members", "2,3",
		"--client", "198.19.0.5:1", "--vip", "198.18.0.100:53", "--proto", "udp")
	if code != 0 || !strings.Contains(out, "accepted  by host 2") || !strings.Contains(out, "rule      dns") {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	code, out, _ = runCtl("filter", "--config", testConfig(t), "--members", "1,2",
		"--client", "198.19.0.5:1", "--vip", "198.18.0.100:2504", "--proto", "udp")
	if code != 0 || !strings.Contains(out, "passed    to every host") {
		t.Fatalf("remote control port: exit %d, output:\n%s", code, out)
	}
}

func TestFilterUsageErrors(t *testing.T) {
	cfg := testConfig(t)
	for _, args := range [][]string{
		{"filter", "--config", cfg, "--members", "1,x", "--client", "198.19.0.5:1", "--vip", "198.18.0.100:80"},
		{"filter", "--config", cfg, "--members", "1,1", "--client", "198.19.0.5:1", "--vip", "198.18.0.100:80"},
		{"filter", "--config", cfg, "--members", "1", "--client", "nope", "--vip", "198.18.0.100:80"},
		{"filter", "--config", cfg, "--members", "1", "--client", "198.19.0.5:1", "--vip", "198.18.0.100:80", "--proto", "sctp"},
		{"filter", "--bogus"},
	} {
		if code, _, _ := runCtl(args...); code != exitUsage {
			t.Errorf("%v: exit %d, want %d", args, code, exitUsage)
		}
	}
	if code, _, errs := runCtl("filter", "--config", "/nonexistent", "--members", "1", "--client", "198.19.0.5:1", "--vip", "198.18.0.100:80"); code != exitError || !strings.Contains(errs, "read config") {
		t.Errorf("missing config: exit %d, %s", code, errs)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestVersion: `nlbctl version`, its --json form, and --version all give
// the stamped version.
func TestVersion(t *testing.T) {
	version.Version = "v9.8.7-test"
	defer func() { version.Version = "" }()
	if code, out, _ := runCtl("version"); code != 0 || !strings.HasPrefix(out, "nlbctl v9.8.7-test (go") {
		t.Errorf("version: %d %q", code, out)
	}
	code, out, _ := runCtl("--json", "version")
	var v map[string]string
	if err := json.Unmarshal([]byte(out), &v); code != 0 || err != nil || v["nlbctl"] != "v9.8.7-test" || !strings.HasPrefix(v["go"], "go") {
		t.Errorf("--json version: %d %q %v", code, out, err)
	}
	if code, out, _ := runCtl("--version"); code != 0 || !strings.Contains(out, "v9.8.7-test") {
		t.Errorf("--version: %d %q", code, out)
	}
}

// TestJSONNotHTMLEscaped: --json output keeps <, > and & as they are.
func TestJSONNotHTMLEscaped(t *testing.T) {
	var b bytes.Buffer
	if err := writeJSON(&b, map[string]string{"error": "a <b> & c"}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"a <b> & c"`) {
		t.Errorf("escaped: %s", b.String())
	}
}

// TestUsageExitCodes: every kind of command-line mistake exits 2.
func TestUsageExitCodes(t *testing.T) {
	for _, args := range [][]string{{"--bogus", "query"}, {"query", "extra"}, {"nosuchcmd"}, {"watch", "--interval", "1ms"}, {"filter", "--client", "x"}} {
		if code, _, _ := runCtl(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
