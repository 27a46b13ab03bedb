//go:build linux

package e2e

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nlbproject/nlb/internal/cluster"
	"github.com/nlbproject/nlb/internal/netns"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files of TestJSONGolden")

// volatile are the JSON keys whose values differ from run to run (times,
// counters, incarnations, and what depends on the per-run key's hash
// seed): the golden files keep their type, not their value.
var volatile = map[string]bool{
	"uptime": true, "incarnation": true, "convergences": true, "last_convergence_ms": true,
	"accepted_packets": true, "dropped_packets": true, "epoch": true, "version": true, "go": true,
	"nlbctl": true, "remote_refused": true, "owned_buckets": true, "bucket": true, "owner": true,
	"accepted_by": true, "hash_seed": true, "key_file": true, "why": true, "config_digest": true,
	"interface": true, "verdict": true, "reason": true, "accepted_bytes": true, "connections": true,
	"retained_buckets": true,
}

// normalize replaces volatile values by a placeholder of their kind: 0,
// "*", [0] (an array keeps its length), {"*": 0} (a map keeps its keys'
// count out).
func normalize(v any, key string, also map[string]bool) any {
	vol := volatile[key] || also[key]
	switch x := v.(type) {
	case map[string]any:
		if vol {
			return map[string]any{"*": "*"}
		}
		for k, e := range x {
			x[k] = normalize(e, k, also)
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = normalize(e, key, also)
		}
		return x
	case float64:
		if vol {
			return 0
		}
	case string:
		if vol {
			return "*"
		}
	}
	return v
}

// settingsChange are the commands after which the host's state races
// with the epoch they start (converged, or already converging).
var settingsChange = map[string]bool{"drain": true, "enable": true, "disable": true, "enable-all": true, "reload": true}

// TestJSONGolden: every nlbctl command's --json output, from a client of
// a 3-host cluster, against golden files (go test ./e2e -run
// TestJSONGolden -update rewrites them): host IDs as arrays of numbers,
// empty lists as [], the reply envelope, each result's fields and types.
// Volatile values keep their type only (see volatile). A script may rely
// on what these files show.
func TestJSONGolden(t *testing.T) {
	netns.RequireRoot(t)
	c := cluster.New(t, cluster.Options{})
	startAll(t, c, all3)
	nlbctl := buildNlbctl(t)
	remote := []string{"--json", "--cluster", cluster.VIP.String(), "--key-file", c.KeyFile}
	flow := []string{"--client", c.Clients[0].IPs[0].String() + ":40000", "--vip", cluster.VIP.String() + ":80"}
	cases := []struct {
		name string
		args []string
		code int
	}{
		{"query", append(remote, "query"), 0},
		{"params", append(remote, "--target", "2", "params"), 0},
		{"ip2mac", append(remote, "--target", "2", "ip2mac"), 0},
		{"filter", append(append(remote, "filter"), flow...), 0},
		{"drain", append(remote, "--target", "3", "drain", "web"), 0},
		{"enable", append(remote, "--target", "3", "enable", "web"), 0},
		{"disable", append(remote, "--target", "3", "disable", "echo"), 0},
		{"enable-all", append(remote, "--target", "3", "enable", "all"), 0},
		{"reload", append(remote, "--target", "3", "reload"), 0},
		{"drainstop", append(remote, "--target", "3", "drainstop"), 0},
		{"start", append(remote, "--target", "3", "start"), 0},
		{"stop", append(remote, "--target", "3", "stop"), 0},
		{"suspend", append(remote, "--target", "3", "suspend"), 0},
		{"start-suspended", append(remote, "--target", "3", "start"), 0},
		{"resume", append(remote, "--target", "3", "resume"), 0},
		{"no-answer", []string{"--json", "--host", cluster.HostIP(3).String(), "--key-file", c.KeyFile, "--port", "9", "--timeout", "300ms", "query"}, 3},
		{"version", []string{"--json", "version"}, 0},
		{"queryport", append(remote, "queryport", "web"), 0},
		{"events-none", append(remote, "--target", "2", "events", "--since", "999999"), 0},
	}
	for _, tc := range cases {
		out, code := nlbctlIn(t, c.Clients[0], nlbctl, tc.args...)
		if code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%s", tc.name, code, tc.code, out)
			continue
		}
		// stderr carries the exit reason; the JSON document is stdout's
		// first line on.
		doc := out[strings.Index(out, "{"):]
		if i := strings.LastIndex(doc, "}"); i >= 0 {
			doc = doc[:i+1]
		}
		var v any
		if err := json.Unmarshal([]byte(doc), &v); err != nil {
			t.Errorf("%s: not JSON: %v\n%s", tc.name, err, out)
			continue
		}
		var also map[string]bool
		if settingsChange[tc.name] {
			also = map[string]bool{"state": true}
		}
		got, _ := json.MarshalIndent(normalize(v, "", also), "", "  ")
		got = append(got, '\n')
		if strings.Contains(string(got), `"AQ`) {
			t.Errorf("%s: base64 in the output:\n%s", tc.name, got)
		}
		path := filepath.Join("testdata", "json", tc.name+".json")
		if *updateGolden {
			os.MkdirAll(filepath.Dir(path), 0o755)
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Errorf("%s: %v (run with -update to create it)", tc.name, err)
			continue
		}
		if string(want) != string(got) {
			t.Errorf("%s: --json output differs from %s:\n%s\nwant:\n%s", tc.name, path, got, want)
		}
		// Each command starts from a settled cluster, so that the state
		// in its reply is the command's doing alone.
		switch tc.name {
		case "drainstop", "stop", "suspend":
			waitStateFor(t, c, 3, time.Minute, "stopped", "suspended")
		case "drain", "enable", "disable", "enable-all", "reload", "start", "resume":
			if _, err := c.WaitConverged(all3, 20*time.Second); err != nil {
				t.Fatalf("after %s: %v", tc.name, err)
			}
		}
	}
}
