package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/remote"
)

// HookQueue is how many events wait for the notify command; beyond it an
// event's run is dropped (and counted), never waited for.
const HookQueue = 256

// Hook results, the label values of nlb_notify_runs_total.
const (
	HookOK      = "ok"      // exited 0
	HookFailed  = "failed"  // could not start, or exited non-zero
	HookTimeout = "timeout" // killed at host.notify.timeout
	HookDropped = "dropped" // the queue was full
)

var hookResults = []string{HookOK, HookFailed, HookTimeout, HookDropped}

// hookRunner runs host.notify's command once per event, one run at a
// time in event order, from its own goroutine: the agent only enqueues.
// A run that outlives the timeout is killed with its process group.
type hookRunner struct {
	cfg   func() (*config.Notify, hookEnv) // read at each event (reload changes it)
	queue chan hookJob
	log   hclog.Logger
	runs  [4]atomic.Uint64 // by hookResults index
}

// hookEnv is the host's part of the environment.
type hookEnv struct {
	cluster string
	hostID  uint8
	state   func() string
}

type hookJob struct {
	ev  remote.Event
	n   *config.Notify
	env hookEnv
}

func newHookRunner(cfg func() (*config.Notify, hookEnv), log hclog.Logger) *hookRunner {
	return &hookRunner{cfg: cfg, queue: make(chan hookJob, HookQueue), log: log}
}

// Runs returns how many runs ended with result (HookOK, …).
func (h *hookRunner) Runs(result string) uint64 {
	for i, r := range hookResults {
		if r == result {
			return h.runs[i].Load()
		}
	}
	return 0
}

func (h *hookRunner) count(result string) {
	for i, r := range hookResults {
		if r == result {
			h.runs[i].Add(1)
		}
	}
}

// enqueue schedules the command for ev if one is configured for its kind.
// It never blocks.
func (h *hookRunner) enqueue(ev remote.Event) {
	n, env := h.cfg()
	if n == nil || n.Events != nil && !n.Events[ev.Kind] {
		return
	}
	select {
	case h.queue <- hookJob{ev, n, env}:
	default:
		h.count(HookDropped)
		h.log.Warn("notify: queue full, event not delivered", "seq", ev.Seq, "kind", ev.Kind)
	}
}

// run delivers queued events until ctx ends.
func (h *hookRunner) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-h.queue:
			res, err := h.runOne(ctx, j)
			h.count(res)
			if res != HookOK {
				h.log.Warn("notify command", "result", res, "seq", j.ev.Seq, "kind", j.ev.Kind, "error", err)
			}
		}
	}
}

// runOne runs the command for one event and says how it ended.
func (h *hookRunner) runOne(ctx context.Context, j hookJob) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, j.n.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, j.n.Command[0], j.n.Command[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Kill the whole group: a shell script's children must not outlive
	// the timeout either.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	cmd.Env = append(os.Environ(), hookVars(j.ev, j.env)...)
	cmd.Dir = "/"
	err := cmd.Run()
	switch {
	case ctx.Err() == context.DeadlineExceeded:
		return HookTimeout, fmt.Errorf("killed after %v", j.n.Timeout)
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return HookFailed, fmt.Errorf("exit status %d", ee.ExitCode())
		}
		return HookFailed, err
	}
	return HookOK, nil
}

// hookVars is the event in environment variables (docs/observability.md).
func hookVars(ev remote.Event, env hookEnv) []string {
	state := ""
	if env.state != nil {
		state = env.state()
	}
	return []string{
		"NLB_EVENT=" + ev.Kind,
		"NLB_EVENT_SEQ=" + strconv.FormatUint(ev.Seq, 10),
		"NLB_EVENT_TIME=" + ev.Time,
		"NLB_EVENT_HOST=" + strconv.Itoa(int(ev.Host)),
		"NLB_EVENT_DETAIL=" + ev.Detail,
		"NLB_EVENT_SOURCE=" + ev.Source,
		"NLB_CLUSTER=" + env.cluster,
		"NLB_HOST_ID=" + strconv.Itoa(int(env.hostID)),
		"NLB_STATE=" + state,
	}
}
