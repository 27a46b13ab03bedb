package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/convergence"
	"github.com/nlbproject/nlb/heartbeat"
)

// RetainedFile holds the operator's state of the cluster on the NIC, when
// host.retain_state is on.
func (l Layout) RetainedFile(ifname string) string {
	return filepath.Join(l.DataDir, ifname+".retained.json")
}

// retained is the operator state kept across restarts: the host's state
// as the last command left it and the rules it disabled or drained.
type retained struct {
	// State is started, stopped or suspended (a drainstop is kept as
	// stopped: where it ends).
	State string `json:"state"`
	// Rules maps a rule's name to disabled or draining; enabled rules are
	// absent.
	Rules map[string]string `json:"rules"`
	Saved string            `json:"saved"`
	// By is the command and its source that last changed it.
	By string `json:"by"`
}

// retainedFrom is the operator state of a node's status: its state (a
// drainstop in progress is kept as stopped, where it ends; any other
// active state as started) and its rule overrides.
func retainedFrom(st Status, ruleNames []string) retained {
	r := retained{State: string(config.StartStarted), Rules: map[string]string{}}
	switch st.State {
	case convergence.StateSuspended:
		r.State = string(config.StartSuspended)
	case convergence.StateStopped, convergence.StateDraining:
		r.State = string(config.StartStopped)
	}
	for i, f := range st.RuleFlags {
		if i >= len(ruleNames) {
			break
		}
		switch {
		case f&heartbeat.RuleDisabled != 0:
			r.Rules[ruleNames[i]] = "disabled"
		case f&heartbeat.RuleDraining != 0:
			r.Rules[ruleNames[i]] = "draining"
		}
	}
	return r
}

// readRetained reads the retained state; a missing file is (zero, false,
// nil).
func readRetained(path string) (retained, bool, error) {
	var r retained
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return r, false, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, false, fmt.Errorf("%s: %w", path, err)
	}
	switch config.InitialState(r.State) {
	case config.StartStarted, config.StartStopped, config.StartSuspended:
	default:
		return r, false, fmt.Errorf("%s: state %q is not started, stopped or suspended", path, r.State)
	}
	return r, true, nil
}

// writeRetained writes r atomically and durably (a reboot right after a
// command must find it).
func writeRetained(path string, r retained) error {
	r.Saved = time.Now().UTC().Format(time.RFC3339)
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("retain state: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("retain state: %w", err)
	}
	return nil
}

// startState applies a retained state to the machine's configuration: the
// host's state and its rule overrides. Rules it names that the
// configuration no longer has are returned (and ignored).
func (r retained) apply(cfg *config.Resolved, mc *convergence.Config) (unknown []string) {
	switch config.InitialState(r.State) {
	case config.StartStopped:
		mc.StartState = convergence.StateStopped
	case config.StartSuspended:
		mc.StartState = convergence.StateSuspended
	default:
		mc.StartState = convergence.StateJoining
	}
	mc.RuleFlags = make([]uint8, len(cfg.Rules))
	for name, v := range r.Rules {
		i := -1
		for j, n := range cfg.RuleNames {
			if n == name {
				i = j
			}
		}
		if i < 0 {
			unknown = append(unknown, name)
			continue
		}
		switch v {
		case "disabled":
			mc.RuleFlags[i] = heartbeat.RuleDisabled
		case "draining":
			mc.RuleFlags[i] = heartbeat.RuleDraining
		}
	}
	sort.Strings(unknown)
	return unknown
}
