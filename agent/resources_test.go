package agent

import (
	"errors"
	"slices"
	"testing"
)

// TestResourcesUnwind: each mode undoes the stack in reverse order, with
// remove or release as the mode and the adoption say, and runs every
// step past a failure.
func TestResourcesUnwind(t *testing.T) {
	for _, tc := range []struct {
		mode unwindMode
		want []string
	}{
		{undoSetup, []string{"release sock", "release nic", "remove dp", "remove mount"}},
		{leaveKeep, []string{"release sock", "release nic", "release dp"}},
		{leaveRemove, []string{"release sock", "remove nic", "remove dp", "remove mount"}},
	} {
		var got []string
		note := func(s string, err error) func() error {
			return func() error { got = append(got, s); return err }
		}
		var r resources
		r.push(resource{name: "mount", remove: note("remove mount", nil)})
		r.push(resource{name: "dp", release: note("release dp", nil), remove: note("remove dp", errors.New("busy"))})
		r.push(resource{name: "nic", release: note("release nic", nil), remove: note("remove nic", nil), adopted: true})
		r.push(resource{name: "sock", release: note("release sock", nil)})
		err := r.unwind(tc.mode)
		if !slices.Equal(got, tc.want) {
			t.Errorf("mode %d: ran %q, want %q", tc.mode, got, tc.want)
		}
		if wantErr := slices.Contains(tc.want, "remove dp"); (err != nil) != wantErr {
			t.Errorf("mode %d: error %v, want one: %v", tc.mode, err, wantErr)
		}
		if len(r.items) != 0 {
			t.Errorf("mode %d: %d items left after unwind", tc.mode, len(r.items))
		}
	}
}
