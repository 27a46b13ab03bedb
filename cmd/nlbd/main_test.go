package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	os.WriteFile(key, bytes.Repeat([]byte("x"), 32), 0o600)
	b, err := os.ReadFile("../../examples/host1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte(strings.Replace(string(b), "/etc/nlb/cluster.key", key, 1)), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(strings.Replace(strings.Replace(string(b), "/etc/nlb/cluster.key", key, 1), "id: 1", "id: 99", 1)), 0o600)

	var out, errb bytes.Buffer
	if code := run([]string{"--check-config", good}, &out, &errb); code != 0 || !strings.Contains(out.String(), "config ok") {
		t.Fatalf("good config: exit %d\n%s%s", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"--check-config", bad}, &out, &errb); code == 0 || !strings.Contains(errb.String(), "host.id") {
		t.Fatalf("bad config: exit %d, stderr %q", code, errb.String())
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
