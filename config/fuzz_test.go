package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParseConfig: arbitrary input never panics the parser or the
// validator, and a configuration that validates has values in range.
func FuzzParseConfig(f *testing.F) {
	b, err := os.ReadFile("../examples/host1.yaml")
	if err != nil {
		f.Fatal(err)
	}
	key := filepath.Join(f.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef"), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("cluster: {vips: [198.18.0.1]}"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		c.Cluster.KeyFile = key // never read files the input names
		r, err := c.Resolve()
		if err != nil {
			return
		}
		if r.HostID < 1 || r.HostID > 64 || len(r.VIPs) == 0 || len(r.Rules) != len(r.HostRules) {
			t.Fatalf("validated config out of range: %+v", r)
		}
	})
}
