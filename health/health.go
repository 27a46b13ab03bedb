// Package health runs the local service checks of port rules: a TCP
// connect, an HTTP(S) GET with an expected status, or a command. A
// Tracker turns results into up/down with rise and fall thresholds; a
// Runner probes on a schedule and reports changes. The agent drains a
// rule on this host while its check is down.
package health

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"sync"
	"time"
)

// Kind is the kind of check.
type Kind string

const (
	KindTCP   Kind = "tcp"   // connect to Target (host:port)
	KindHTTP  Kind = "http"  // GET Target (a URL), expect Expect
	KindHTTPS Kind = "https" // as http; the certificate is not verified (a local check)
	KindExec  Kind = "exec"  // run Command; exit status 0 passes
)

// Check is one rule's health check.
type Check struct {
	Rule    string
	Kind    Kind
	Target  string   // tcp: host:port; http(s): URL
	Command []string // exec: argv
	// Expect is the HTTP status that passes; 0 accepts 200–399.
	Expect   int
	Interval time.Duration
	Timeout  time.Duration
	// Rise consecutive passes bring a down check up; Fall consecutive
	// failures take an up check down.
	Rise, Fall int
}

// Tracker is the pure state machine of one check. Before its first
// result the check is unknown and counts as down, so that a host never
// takes traffic for a service it has not seen answer; the first result
// decides at once, later changes need Rise passes or Fall failures in a
// row.
type Tracker struct {
	Rise, Fall int
	known, up  bool
	streak     int // consecutive results disagreeing with up
}

// Observe records a result and reports whether the state changed.
func (t *Tracker) Observe(pass bool) (changed bool) {
	if !t.known {
		t.known, t.up, t.streak = true, pass, 0
		return true
	}
	if pass == t.up {
		t.streak = 0
		return false
	}
	t.streak++
	need := t.Fall
	if !t.up {
		need = t.Rise
	}
	if t.streak < max(need, 1) {
		return false
	}
	t.up, t.streak = pass, 0
	return true
}

// Up reports whether the check is up (false while unknown).
func (t *Tracker) Up() bool { return t.known && t.up }

// Known reports whether the check has a result.
func (t *Tracker) Known() bool { return t.known }

// Probe runs the check once. It returns nil on a pass and otherwise an
// error whose text says what failed, e.g. "http 503".
func (c *Check) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	switch c.Kind {
	case KindTCP:
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", c.Target)
		if err != nil {
			return fmt.Errorf("tcp %s: %w", c.Target, unwrapOp(err))
		}
		return conn.Close()
	case KindHTTP, KindHTTPS:
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Target, nil)
		if err != nil {
			return fmt.Errorf("http: %w", err)
		}
		req.Header.Set("User-Agent", "nlbd-health")
		tr := &http.Transport{DisableKeepAlives: true, Proxy: nil,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: true}} // #nosec G402: a local liveness check
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, CheckRedirect: noRedirect}).Do(req)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Kind, unwrapOp(err))
		}
		resp.Body.Close()
		if c.Expect != 0 && resp.StatusCode != c.Expect || c.Expect == 0 && (resp.StatusCode < 200 || resp.StatusCode > 399) {
			return fmt.Errorf("%s %d", c.Kind, resp.StatusCode)
		}
		return nil
	case KindExec:
		cmd := exec.CommandContext(ctx, c.Command[0], c.Command[1:]...)
		cmd.WaitDelay = time.Second
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.Exited() {
				return fmt.Errorf("exec exit %d", ee.ExitCode())
			}
			if ctx.Err() != nil {
				return fmt.Errorf("exec timeout after %v", c.Timeout)
			}
			return fmt.Errorf("exec: %w", err)
		}
		return nil
	}
	return fmt.Errorf("unknown check kind %q", c.Kind)
}

func noRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// unwrapOp shortens net.OpError chains to their cause ("connection refused").
func unwrapOp(err error) error {
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return errors.New("timeout")
	}
	return err
}

// Status is a check's state for query and metrics.
type Status struct {
	Rule   string
	Kind   string
	Known  bool
	Up     bool
	Detail string // the last failure, or "" after a pass
	Passed uint64
	Failed uint64
	Since  time.Time // last change
}

// Runner probes every check on its interval and calls OnChange (from the
// check's goroutine) whenever a check goes up or down.
type Runner struct {
	checks   []*Check
	OnChange func(rule string, up bool, detail string)

	mu       sync.Mutex
	state    map[string]*Status
	trackers map[string]*Tracker
}

// NewRunner returns a runner; Run starts it.
func NewRunner(checks []*Check) *Runner {
	r := &Runner{checks: checks, state: map[string]*Status{}, trackers: map[string]*Tracker{}}
	for _, c := range checks {
		r.state[c.Rule] = &Status{Rule: c.Rule, Kind: string(c.Kind)}
		r.trackers[c.Rule] = &Tracker{Rise: c.Rise, Fall: c.Fall}
	}
	return r
}

// Prime probes every check once, in parallel, without calling OnChange,
// so that a starting host knows which of its services answer before it
// joins. It returns the rules whose check failed.
func (r *Runner) Prime(ctx context.Context) (down []string) {
	var wg sync.WaitGroup
	for _, c := range r.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.observe(c, c.Probe(ctx))
		}()
	}
	wg.Wait()
	for _, s := range r.Snapshot() {
		if !s.Up {
			down = append(down, s.Rule)
		}
	}
	return down
}

// Run probes until ctx ends; it returns when every check goroutine has.
func (r *Runner) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, c := range r.checks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop(ctx, c)
		}()
	}
	wg.Wait()
}

func (r *Runner) loop(ctx context.Context, c *Check) {
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	if r.Status(c.Rule).Known { // primed: wait one interval
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
	for {
		err := c.Probe(ctx)
		if ctx.Err() != nil {
			return
		}
		if up, changed := r.observe(c, err); changed && r.OnChange != nil {
			detail := ""
			if err != nil {
				detail = err.Error()
			}
			r.OnChange(c.Rule, up, detail)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// observe records one probe result.
func (r *Runner) observe(c *Check, err error) (up, changed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	tr, s := r.trackers[c.Rule], r.state[c.Rule]
	changed = tr.Observe(err == nil)
	if err == nil {
		s.Passed++
	} else {
		s.Failed++
	}
	if changed {
		s.Known, s.Up, s.Since = true, tr.Up(), time.Now()
		s.Detail = ""
		if !s.Up && err != nil {
			s.Detail = err.Error()
		}
	}
	return tr.Up(), changed
}

// Status returns one rule's status.
func (r *Runner) Status(rule string) Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s := r.state[rule]; s != nil {
		return *s
	}
	return Status{Rule: rule}
}

// Snapshot returns every check's status, in configuration order.
func (r *Runner) Snapshot() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Status, 0, len(r.checks))
	for _, c := range r.checks {
		out = append(out, *r.state[c.Rule])
	}
	return out
}
