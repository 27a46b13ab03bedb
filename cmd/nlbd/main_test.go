package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfig: a valid file gets its summary and the host's checks
// (on lo, which every machine has); a file with three mistakes gets all
// three, in config terms, and exit 1; --json says the same.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, bytes.Repeat([]byte("x"), 32), 0o600)
	b, err := os.ReadFile("../../examples/host1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(strings.Replace(string(b), "/etc/nlb/cluster.key", key, 1), "interface: eth0", "interface: lo", 1)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(y), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	bad3 := strings.NewReplacer("id: 1", "id: 99", "mac_mode: unicast", "mac_mode: broadcast", "period: 100ms", "period: 1ms").Replace(y)
	os.WriteFile(bad, []byte(bad3), 0o600)

	var out, errb bytes.Buffer
	code := run([]string{"--check-config", good}, &out, &errb)
	for _, want := range []string{"config ok", "PASS  kernel", "interface      lo", "drain timeout"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("good config: no %q in\n%s", want, out.String())
		}
	}
	if os.Geteuid() == 0 {
		if code != 0 || !strings.Contains(out.String(), "PASS  ebpf") {
			t.Errorf("good config as root: exit %d\n%s%s", code, out.String(), errb.String())
		}
	} else if code != 1 || !strings.Contains(out.String(), "FAIL  capabilities") {
		t.Errorf("good config without root: exit %d, want 1 and a capabilities failure\n%s", code, out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"--check-config", bad}, &out, &errb); code != 1 || strings.Count(out.String(), "FAIL  config") != 3 {
		t.Fatalf("bad config: exit %d, want 1 and three errors:\n%s", code, out.String())
	}
	for _, want := range []string{"host.id", "cluster.mac_mode", "cluster.heartbeat.period"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bad config: %s not reported:\n%s", want, out.String())
		}
	}
	out.Reset()
	run([]string{"--check-config", bad, "--json"}, &out, &errb)
	var rep struct {
		OK     bool     `json:"ok"`
		Errors []string `json:"errors"`
		Checks []any    `json:"checks"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil || rep.OK || len(rep.Errors) != 3 || rep.Checks == nil {
		t.Errorf("--json: %v %+v\n%s", err, rep, out.String())
	}
}

// TestJournalWriter: each log line gets its syslog priority for journald.
func TestJournalWriter(t *testing.T) {
	for line, want := range map[string]string{
		"[ERROR] nlbd.host1: x":   "<3>[ERROR] nlbd.host1: x",
		"[WARN]  nlbd.host1: x":   "<4>[WARN]  nlbd.host1: x",
		"[INFO]  nlbd.host1: x":   "<6>[INFO]  nlbd.host1: x",
		"[DEBUG] nlbd.host1: x":   "<7>[DEBUG] nlbd.host1: x",
		"something else entirely": "<6>something else entirely",
	} {
		var b bytes.Buffer
		n, err := journalWriter{&b}.Write([]byte(line))
		if err != nil || n != len(line) || b.String() != want {
			t.Errorf("%q: wrote %q (%d, %v), want %q", line, b.String(), n, err, want)
		}
	}
	var b bytes.Buffer
	if underJournald(&b) {
		t.Error("a buffer is not the journal")
	}
}

// TestUsageExitCode: command-line mistakes exit 2, a failed check 1.
func TestUsageExitCode(t *testing.T) {
	for _, args := range [][]string{{"--bogus"}, {"extra"}, {}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errb.String())
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"--check-config", "/nonexistent/nlb.yaml"}, &out, &errb); code != 1 {
		t.Errorf("--check-config of a missing file: exit %d, want 1", code)
	}
}
