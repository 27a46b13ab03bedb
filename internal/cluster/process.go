//go:build linux

package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nlbproject/nlb/internal/netns"
	"github.com/nlbproject/nlb/remote"
)

// buildNlbd builds nlbd once per process.
func buildNlbd(t netns.T, dir string) string {
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildOnce.err = err
			return
		}
		out := filepath.Join(os.TempDir(), netns.Prefix+"-nlbd")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/nlbd")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			buildOnce.err = fmt.Errorf("build nlbd: %v: %s", err, b)
			return
		}
		buildOnce.path = out
	})
	if buildOnce.err != nil {
		t.Fatalf("%v", buildOnce.err)
	}
	return buildOnce.path
}

func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d, nil
		}
		p := filepath.Dir(d)
		if p == d {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		d = p
	}
}

// Start starts host id's agent.
func (c *Cluster) Start(id uint8) {
	c.T.Helper()
	h := c.Hosts[id]
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		c.T.Fatalf("host %d: agent already running", id)
	}
	logf, err := os.OpenFile(h.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.T.Fatalf("%v", err)
	}
	// nsenter enters only the network namespace: the agent's bpffs and
	// state files are in the shared mount namespace, so pins outlive it.
	cmd := exec.Command("nsenter", "--net="+h.NS.Path(), "--", c.Opts.Nlbd, "--config", h.Config,
		"--run-dir", h.RunDir, "--data-dir", h.DataDir, "--bpffs", h.BPFFS, "--log-level", "info")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), h.Env...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		c.T.Fatalf("start host %d: %v", id, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	h.cmd, h.done = cmd, done
}

// Signal sends sig to host id's agent.
func (c *Cluster) Signal(id uint8, sig syscall.Signal) {
	h := c.Hosts[id]
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd != nil {
		h.cmd.Process.Signal(sig)
	}
}

// Wait waits for host id's agent to exit and returns its error.
func (c *Cluster) Wait(id uint8, timeout time.Duration) error {
	h := c.Hosts[id]
	h.mu.Lock()
	done := h.done
	h.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case err := <-done:
		h.mu.Lock()
		h.cmd, h.done = nil, nil
		h.mu.Unlock()
		return err
	case <-time.After(timeout):
		return fmt.Errorf("host %d: agent still running after %v", id, timeout)
	}
}

// Kill kills host id's agent with SIGKILL and waits for it.
func (c *Cluster) Kill(id uint8) {
	c.Signal(id, syscall.SIGKILL)
	c.Wait(id, 10*time.Second)
}

func (h *Host) stopForCleanup() {
	h.mu.Lock()
	cmd, done := h.cmd, h.done
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	// Leave at once; a stuck agent is killed.
	cmd.Process.Signal(syscall.SIGUSR2)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

// Local runs a command on host id's agent over its control socket.
func (c *Cluster) Local(id uint8, cmd remote.Command, args remote.Args) (*remote.HostReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	res, err := remote.DoLocal(ctx, remote.SocketPath(c.Hosts[id].RunDir), cmd, args)
	if err != nil {
		return nil, err
	}
	r := res.Replies[0]
	if r.Status != remote.StatusOK {
		return &r, fmt.Errorf("host %d: %s: %s", id, cmd, r.Error)
	}
	return &r, nil
}

// Query returns host id's query answer.
func (c *Cluster) Query(id uint8) (*remote.QueryResult, error) {
	r, err := c.Local(id, remote.CmdQuery, remote.Args{})
	if err != nil {
		return nil, err
	}
	var q remote.QueryResult
	if err := json.Unmarshal(r.Result, &q); err != nil {
		return nil, err
	}
	return &q, nil
}

// WaitConverged waits until every host in ids is converged on one epoch
// whose members are exactly ids, and returns that epoch.
func (c *Cluster) WaitConverged(ids []uint8, timeout time.Duration) (uint64, error) {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var epoch uint64
		ok := true
		var states []string
		for _, id := range ids {
			q, err := c.Query(id)
			if err != nil {
				ok = false
				states = append(states, fmt.Sprintf("%d: %v", id, err))
				continue
			}
			states = append(states, fmt.Sprintf("%d: %s e%d %v heard %v", id, q.State, q.Epoch, q.Members, q.Heard))
			if q.State != "converged" && q.State != "converged as default" || epoch != 0 && q.Epoch != epoch || !sameIDs(q.Members, ids) {
				ok = false
			}
			epoch = q.Epoch
		}
		if ok {
			return epoch, nil
		}
		last = strings.Join(states, "; ")
		time.Sleep(50 * time.Millisecond)
	}
	return 0, fmt.Errorf("hosts %v did not converge in %v: %s\n%s", ids, timeout, last, c.logTails(ids, 12))
}

// logTails is the last n lines of each host's log, for a failure report.
func (c *Cluster) logTails(ids []uint8, n int) string {
	var b strings.Builder
	for _, id := range ids {
		data, _ := os.ReadFile(c.Hosts[id].Log)
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		fmt.Fprintf(&b, "--- host %d, last %d log lines:\n%s\n", id, n, strings.Join(lines[max(0, len(lines)-n):], "\n"))
	}
	return b.String()
}

func sameIDs(a, b []uint8) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[uint8]bool{}
	for _, x := range a {
		seen[x] = true
	}
	for _, x := range b {
		if !seen[x] {
			return false
		}
	}
	return true
}

// Owner asks host id which host owns a flow to the VIP in the live tables.
func (c *Cluster) Owner(id uint8, client netip.AddrPort, port uint16, proto string) (uint8, error) {
	return c.OwnerTo(id, client, netip.AddrPortFrom(VIP, port), proto)
}

// OwnerTo asks host id which host owns the flow client → dst.
func (c *Cluster) OwnerTo(id uint8, client, dst netip.AddrPort, proto string) (uint8, error) {
	r, err := c.Local(id, remote.CmdFilter, remote.Args{Client: client.String(),
		Dest: dst.String(), Proto: proto})
	if err != nil {
		return 0, err
	}
	var f remote.FilterResult
	if err := json.Unmarshal(r.Result, &f); err != nil {
		return 0, err
	}
	return f.Owner, nil
}

// Pid is the process ID of host id's running agent (0 if none).
func (c *Cluster) Pid(id uint8) int {
	h := c.Hosts[id]
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cmd == nil || h.cmd.Process == nil {
		return 0
	}
	return h.cmd.Process.Pid
}

// StartAll starts the agents of ids and waits until they converge
// together; it returns the epoch.
func (c *Cluster) StartAll(ids []uint8) uint64 {
	c.T.Helper()
	for _, id := range ids {
		c.Start(id)
	}
	e, err := c.WaitConverged(ids, 30*time.Second)
	if err != nil {
		c.T.Fatalf("%v", err)
	}
	return e
}
