package agent

import (
	"errors"
	"fmt"
)

// resources is what setup put in place, in order: one stack serves both
// the undo of a failed setup and the teardown at exit, so the two cannot
// drift apart.
type resources struct {
	items []resource
}

// resource is one thing setup did.
type resource struct {
	name string
	// release lets go of it and leaves it in place (closing a handle,
	// unpinning nothing); nil: nothing to let go of.
	release func() error
	// remove takes it off the host; nil: release is all there is to do.
	remove func() error
	// adopted: it was already in place when setup began (left by an
	// earlier agent), so undoing a failed setup leaves it there.
	adopted bool
}

// push records one more resource.
func (r *resources) push(res resource) { r.items = append(r.items, res) }

// unwindMode says how far the stack is undone.
type unwindMode uint8

const (
	// undoSetup: a setup failed; take off what this setup created, let go
	// of what it adopted: the host is left as it was found.
	undoSetup unwindMode = iota + 1
	// leaveKeep: exit leaving the data plane and NIC for the next agent.
	leaveKeep
	// leaveRemove: exit taking everything off the host (stop, drainstop).
	leaveRemove
)

// unwind undoes the stack in reverse order and empties it; every step
// runs even when an earlier one failed, and the errors are joined.
func (r *resources) unwind(mode unwindMode) error {
	var errs []error
	for i := len(r.items) - 1; i >= 0; i-- {
		res := r.items[i]
		f := res.release
		if res.remove != nil && (mode == leaveRemove || mode == undoSetup && !res.adopted) {
			f = res.remove
		}
		if f == nil {
			continue
		}
		if err := f(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", res.name, err))
		}
	}
	r.items = nil
	return errors.Join(errs...)
}
