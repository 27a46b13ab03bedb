package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nlbproject/nlb/config"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/remote"
)

// Exit codes of remote commands (besides exitOK, exitError, exitUsage).
const (
	exitTimeout = 3 // no host answered
	exitPartial = 4 // some targeted hosts did not answer, or failed
	exitRefused = 5 // the request was refused: stale, replayed or forbidden to the key's role
)

type codeError struct {
	code int
	msg  string
}

func (e codeError) Error() string { return e.msg }

// target holds the global flags that say where a command goes.
type target struct {
	cluster, host, keyFile, config, socket, role string
	port                                         uint16
	hostID                                       uint8
	timeout                                      time.Duration
	asJSON                                       bool
}

func (t *target) flags(c *cobra.Command) {
	f := c.PersistentFlags()
	f.StringVar(&t.cluster, "cluster", "", "send to this VIP: every host answers")
	f.StringVar(&t.host, "host", "", "send to this host's dedicated IP: it alone answers")
	f.Uint8Var(&t.hostID, "target", 0, "with --cluster, only this host ID acts and answers")
	f.StringVar(&t.keyFile, "key-file", "", "key file of the role (remote targets): the admin key, the monitor key, or the cluster key")
	f.StringVar(&t.role, "role", "admin", "the key's role: admin (every command) or monitor (query, params, ip2mac, filter, watch)")
	f.StringVar(&t.config, "config", "", "host config file: key file and port are taken from it")
	f.Uint16Var(&t.port, "port", remote.DefaultPort, "remote-control UDP port")
	f.StringVar(&t.socket, "socket", remote.SocketPath(remote.DefaultRunDir), "local agent's control socket (no --cluster or --host)")
	f.DurationVar(&t.timeout, "timeout", 2*time.Second, "how long to wait for replies")
	f.BoolVar(&t.asJSON, "json", false, "print JSON")
}

// send runs cmd where the flags say and returns what came back.
func (t *target) send(cmd remote.Command, args remote.Args) (*remote.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout+time.Second)
	defer cancel()
	if t.cluster == "" && t.host == "" {
		if t.hostID != 0 {
			return nil, usageError{errors.New("--target needs --cluster")}
		}
		return remote.DoLocal(ctx, t.socket, cmd, args)
	}
	if t.cluster != "" && t.host != "" {
		return nil, usageError{errors.New("--cluster and --host exclude each other")}
	}
	addr := t.cluster + t.host
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("%q is not an IP address", addr)}
	}
	ip = ip.Unmap()
	role, err := remote.ParseRole(t.role)
	if err != nil {
		return nil, usageError{fmt.Errorf("--role: %w", err)}
	}
	var secret []byte
	port := t.port
	if t.config != "" {
		// On a host: its configuration names the keys.
		r, err := config.Load(t.config)
		if err != nil {
			return nil, err
		}
		secret = r.Keys.Admin
		if role == remote.RoleMonitor {
			secret = r.Keys.Monitor
		}
		if r.RemotePort != 0 && port == remote.DefaultPort {
			port = r.RemotePort
		}
	}
	if t.keyFile != "" {
		if secret, err = config.ReadKeyFile("--key-file", t.keyFile, false); err != nil {
			return nil, err
		}
	}
	if secret == nil {
		return nil, usageError{errors.New("remote targets need --key-file or --config")}
	}
	key := remote.DeriveKey(secret, role)
	c := &remote.Client{Key: &key, Role: role, Timeout: t.timeout, OneHost: t.host != ""}
	target := t.hostID
	return c.Do(ctx, netip.AddrPortFrom(ip, port), target, cmd, args)
}

// outcome turns a result into the exit status.
func outcome(res *remote.Result) error {
	failed := 0
	for _, r := range res.Replies {
		if r.Status != remote.StatusOK {
			failed++
		}
	}
	switch {
	case len(res.Refused) > 0:
		return codeError{exitRefused, "refused by " + refusals(res)}
	case len(res.Replies) == 0:
		return codeError{exitTimeout, "no host answered (is remote control enabled, the address one the hosts serve, and the key and --role right? a request with a wrong key gets no answer)"}
	case len(res.Missing) > 0 || failed > 0:
		msg := []string{}
		if len(res.Missing) > 0 {
			msg = append(msg, fmt.Sprintf("no answer from host(s) %v", res.Missing))
		}
		if failed > 0 {
			msg = append(msg, fmt.Sprintf("%d host(s) failed", failed))
		}
		return codeError{exitPartial, strings.Join(msg, "; ")}
	}
	return nil
}

// remoteCommands are the commands sent to agents.
func remoteCommands(t *target) []*cobra.Command {
	simple := []struct {
		cmd   remote.Command
		short string
	}{
		{remote.CmdQuery, "Show every host's state, epoch, members and buckets"},
		{remote.CmdStart, "Start cluster operations on the host(s)"},
		{remote.CmdStop, "Stop taking new connections at once; held ones go on to their end"},
		{remote.CmdDrainStop, "Take no new connections, stop when the existing ones end"},
		{remote.CmdSuspend, "Stop at once and end the host's connections; ignore start until resume"},
		{remote.CmdResume, "Leave suspended (then start)"},
		{remote.CmdParams, "Show the effective configuration"},
		{remote.CmdReload, "Re-read the configuration file (weights and priorities)"},
	}
	var out []*cobra.Command
	for _, s := range simple {
		out = append(out, &cobra.Command{
			Use: s.cmd.String(), Short: s.short, Args: cobra.NoArgs,
			RunE: func(c *cobra.Command, _ []string) error { return t.run(c, s.cmd, remote.Args{}) },
		})
	}
	for _, r := range []struct {
		cmd   remote.Command
		short string
	}{
		{remote.CmdEnable, "Enable a port rule (name, VIP:port, port, or all)"},
		{remote.CmdDisable, "Disable a port rule: its traffic is dropped, this host's connections end"},
		{remote.CmdDrain, "Drain a port rule: no new connections, existing ones continue"},
	} {
		out = append(out, &cobra.Command{
			Use: r.cmd.String() + " RULE", Short: r.short, Args: cobra.ExactArgs(1),
			RunE: func(c *cobra.Command, a []string) error { return t.run(c, r.cmd, remote.Args{Rule: a[0]}) },
		})
	}
	out = append(out, &cobra.Command{
		Use: "ip2mac [VIP]", Short: "Show the cluster MAC addresses for a VIP", Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			var args remote.Args
			if len(a) == 1 {
				args.VIP = a[0]
			}
			return t.run(c, remote.CmdIP2MAC, args)
		},
	})
	return out
}

// run sends cmd, prints the replies and returns the outcome.
func (t *target) run(c *cobra.Command, cmd remote.Command, args remote.Args) error {
	res, err := t.send(cmd, args)
	if err != nil {
		return err
	}
	w := c.OutOrStdout()
	if t.asJSON {
		if err := writeJSON(w, jsonResult(res)); err != nil {
			return err
		}
	} else {
		printResult(w, cmd, res)
	}
	return outcome(res)
}

type jsonReply struct {
	Host   uint8           `json:"host"`
	Status string          `json:"status"`
	State  string          `json:"state"`
	Error  string          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

func jsonResult(res *remote.Result) any {
	out := struct {
		Replies []jsonReply    `json:"replies"`
		Refused remote.HostIDs `json:"refused"`
		Missing remote.HostIDs `json:"missing"`
	}{Replies: []jsonReply{}, Refused: append(remote.HostIDs{}, res.Refused...), Missing: append(remote.HostIDs{}, res.Missing...)}
	for _, r := range res.Replies {
		out.Replies = append(out.Replies, jsonReply{r.Host, r.Status.String(), r.State, r.Error, r.Result})
	}
	return out
}

func printResult(w io.Writer, cmd remote.Command, res *remote.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	switch cmd {
	case remote.CmdQuery:
		fmt.Fprintln(tw, "HOST\tSTATE\tEPOCH\tMEMBERS\tDEFAULT\tOWNED BUCKETS\tCONVERGENCES\tLAST\tNOTES")
		mixed := remote.MixedVersions(res)
		for _, r := range res.Replies {
			var q remote.QueryResult
			if r.Status != remote.StatusOK || json.Unmarshal(r.Result, &q) != nil {
				fmt.Fprintf(tw, "%d\t%s\terror: %s\n", r.Host, r.State, r.Error)
				continue
			}
			state := q.State
			if q.Why != "" && (q.State == "refused" || q.State == "stopped" || q.State == "converging") {
				state += " (" + q.Why + ")"
			}
			n := q.NotesLine()
			if mixed {
				n = strings.TrimPrefix(n+"; version "+q.Version, "-; ")
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%d\t%s\t%d\t%.0fms\t%s\n", q.Host, state, q.Epoch, ids(q.Members),
				q.DefaultHost, owned(q.Owned), q.Convergences, q.LastConvergenceMS, n)
		}
		for _, row := range remote.SilentRows(res) {
			fmt.Fprintf(tw, "%d\tno answer\t-\t-\t-\t-\t-\t-\t%s\n", row.Host, row.Notes)
		}
	case remote.CmdPorts:
		printPorts(w, remote.Ports(res))
		for _, r := range res.Replies {
			if r.Status != remote.StatusOK {
				fmt.Fprintf(tw, "%d\tfailed: %s\n", r.Host, r.Error)
			}
		}
	case remote.CmdParams, remote.CmdReload, remote.CmdIP2MAC:
		for _, r := range res.Replies {
			fmt.Fprintf(tw, "host %d (%s): %s\n", r.Host, r.State, r.Status)
			if r.Error != "" {
				fmt.Fprintf(tw, "  error: %s\n", r.Error)
				continue
			}
			var m map[string]any
			if json.Unmarshal(r.Result, &m) == nil {
				keys := make([]string, 0, len(m))
				for k := range m {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					v, _ := json.Marshal(m[k])
					fmt.Fprintf(tw, "  %s\t%s\n", k, v)
				}
			}
		}
	default:
		fmt.Fprintln(tw, "HOST\tSTATE\tRESULT")
		for _, r := range res.Replies {
			result := "ok"
			if r.Error != "" {
				result = "failed: " + r.Error
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\n", r.Host, r.State, result)
		}
	}
	for _, id := range res.Refused {
		fmt.Fprintf(tw, "%d\trefused: %s\n", id, refusalWords(res.RefusedWhy[id]))
	}
	for _, id := range res.Missing {
		fmt.Fprintf(tw, "%d\tno answer\n", id)
	}
}

func ids(v []uint8) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

func owned(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// refusalWords says what a refusal means and what to check.
func refusalWords(st remote.Status) string {
	switch st {
	case remote.StatusStale:
		return fmt.Sprintf("stale (this machine's clock is more than %v from the host's, or the request predates the agent's start)", remote.MaxSkew)
	case remote.StatusReplay:
		return "replayed (this request was seen already)"
	case remote.StatusForbidden:
		return "forbidden (the monitor key may only read)"
	}
	return st.String()
}

// refusals lists the refusing hosts with their reasons.
func refusals(res *remote.Result) string {
	var parts []string
	for _, id := range res.Refused {
		parts = append(parts, fmt.Sprintf("host %d: %s", id, refusalWords(res.RefusedWhy[id])))
	}
	return strings.Join(parts, "; ")
}
