package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
)

func TestRetainedState(t *testing.T) {
	names := []string{"web", "echo", "sticky"}
	for _, c := range []struct {
		st   Status
		want retained
	}{
		{Status{State: convergence.StateConverged}, retained{State: "started", Rules: map[string]string{}}},
		{Status{State: convergence.StateDraining, RuleFlags: []uint8{0, heartbeat.RuleDisabled, heartbeat.RuleDraining}},
			retained{State: "stopped", Rules: map[string]string{"echo": "disabled", "sticky": "draining"}}},
		{Status{State: convergence.StateSuspended}, retained{State: "suspended", Rules: map[string]string{}}},
		{Status{State: convergence.StateStopped}, retained{State: "stopped", Rules: map[string]string{}}},
	} {
		if got := retainedFrom(c.st, names); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%v: got %+v, want %+v", c.st.State, got, c.want)
		}
	}

	dir := t.TempDir()
	path := filepath.Join(dir, "eth0.retained.json")
	if _, ok, err := readRetained(path); ok || err != nil {
		t.Fatalf("missing file: ok %v err %v", ok, err)
	}
	in := retained{State: "suspended", Rules: map[string]string{"echo": "disabled", "gone": "draining"}, By: "suspend from local socket"}
	if err := writeRetained(path, in); err != nil {
		t.Fatal(err)
	}
	out, ok, err := readRetained(path)
	if err != nil || !ok || out.State != "suspended" || !reflect.DeepEqual(out.Rules, in.Rules) || out.Saved == "" {
		t.Fatalf("round trip: %+v %v %v", out, ok, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", fi.Mode(), err)
	}
	cfg := &config.Resolved{RuleNames: names, Rules: make([]filter.PortRule, 3)}
	var mc convergence.Config
	unknown := out.apply(cfg, &mc)
	if mc.StartState != convergence.StateSuspended || !reflect.DeepEqual(mc.RuleFlags, []uint8{0, heartbeat.RuleDisabled, 0}) ||
		!reflect.DeepEqual(unknown, []string{"gone"}) {
		t.Fatalf("apply: state %v flags %v unknown %v", mc.StartState, mc.RuleFlags, unknown)
	}

	// A damaged file is an error naming it, never a state.
	for _, bad := range []string{"{", `{"state":"paused"}`} {
		os.WriteFile(path, []byte(bad), 0o600)
		if _, ok, err := readRetained(path); ok || err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%q: ok %v err %v", bad, ok, err)
		}
	}
}
