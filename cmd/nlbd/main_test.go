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
