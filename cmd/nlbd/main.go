// Command nlbd is the nlb agent that runs on every cluster host.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/internal/version"
	"github.com/nlbproject/nlb/remote"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/agent"
)

func main() {
	// The agent sleeps between heartbeats and does little when awake: one
	// scheduler thread keeps each heartbeat to one wake-up of the process
	// instead of several (an idle OS thread woken to steal work, the
	// network poller's thread woken to re-arm), about a sixth less CPU
	// on a VM where a wake-up is dear (docs/benchmarks.md §3b). The
	// environment's GOMAXPROCS, if set, wins.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var configPath, checkPath, logFormat, logLevel string
	var layout agent.Layout
	var restore, checkJSON bool
	root := &cobra.Command{
		Use:   "nlbd --config FILE | --check-config FILE | --restore --config FILE",
		Short: "nlb agent: distributed load balancing without a dispatcher",
		Long: `nlbd runs on every host of an nlb cluster. It puts the cluster NIC in the
cluster's MAC mode, loads the eBPF filter, exchanges heartbeats with the
other hosts, converges on who owns which flows, and serves nlbctl.

Signals: SIGTERM/SIGINT leave as host.on_exit says (default: drainstop,
then restore the NIC); SIGUSR2 exits at once keeping the data plane and
NIC for the next agent (upgrades: no connection is dropped); SIGHUP
reloads the configuration.`,
		Version: version.String(),
		Args: func(cmd *cobra.Command, args []string) error {
			if err := cobra.NoArgs(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if checkPath != "" {
				return checkConfig(cmd.OutOrStdout(), checkPath, layout.BPFFS, checkJSON)
			}
			if configPath == "" {
				return usageError{fmt.Errorf("--config or --check-config is required")}
			}
			r, err := config.Load(configPath)
			if err != nil {
				return err
			}
			if restore {
				// Undo what a killed agent left: the NIC from its state
				// file, then the pinned data plane.
				msg, err := agent.Restore(layout, r.Interface)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), msg)
				return nil
			}
			level := hclog.LevelFromString(logLevel)
			if level == hclog.NoLevel {
				return fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", logLevel)
			}
			if logFormat != "text" && logFormat != "json" {
				return fmt.Errorf("--log-format %q: want text or json", logFormat)
			}
			lo := &hclog.LoggerOptions{Name: fmt.Sprintf("nlbd.host%d", r.HostID), Level: level,
				JSONFormat: logFormat == "json", Output: stderr}
			if logFormat == "text" && underJournald(stderr) {
				// journald stamps each line and reads its priority
				// from a "<N>" prefix: no timestamp of our own.
				lo.DisableTime, lo.Output = true, journalWriter{stderr}
			}
			log := hclog.New(lo)
			watchdog, _ := daemon.SdWatchdogEnabled(false)
			a := agent.New(r, agent.Options{ConfigPath: configPath, Layout: layout, Log: log,
				Notify: func(state string) { _, _ = daemon.SdNotify(false, state) }, Watchdog: watchdog})
			sigs := make(chan os.Signal, 4)
			signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGHUP)
			defer signal.Stop(sigs)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for {
					select {
					case s := <-sigs:
						switch s {
						case syscall.SIGHUP:
							if _, err := a.Reload(ctx); err != nil {
								log.Error("reload", "error", err)
							}
						case syscall.SIGUSR2:
							a.Exit(config.ExitKeep)
						default:
							a.Exit(r.OnExit)
						}
					case <-ctx.Done():
						return
					}
				}
			}()
			return a.Run(ctx)
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := root.Flags()
	f.StringVar(&configPath, "config", "", "configuration file")
	f.StringVar(&checkPath, "check-config", "", "validate FILE, print a summary and exit; touches nothing")
	f.BoolVar(&checkJSON, "json", false, "with --check-config: print the result as JSON")
	f.BoolVar(&restore, "restore", false, "undo what a killed agent changed (NIC MAC, addresses, sysctls, pinned eBPF), and exit")
	f.StringVar(&layout.RunDir, "run-dir", remote.DefaultRunDir, "directory of the NIC state file and the control socket")
	f.StringVar(&layout.RunDir, "state-dir", remote.DefaultRunDir, "old name of --run-dir")
	f.StringVar(&layout.DataDir, "data-dir", agent.DefaultDataDir, "directory of what survives a reboot: the last incarnation and the quorum's voter set")
	f.MarkHidden("state-dir")
	f.StringVar(&layout.BPFFS, "bpffs", agent.DefaultBPFFS, "bpffs mount point (mounted if absent); pins go under BPFFS/nlb/IFNAME")
	f.StringVar(&logFormat, "log-format", "text", "text or json")
	f.StringVar(&logLevel, "log-level", "info", "trace, debug, info, warn or error")
	for _, add := range extraCommands {
		add(root)
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "nlbd:", err)
		var u usageError
		if errors.As(err, &u) {
			return 2
		}
		return 1
	}
	return 0
}

// usageError is a mistake in the command line: exit 2, as nlbctl's.
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

// extraCommands add build-time commands to the root (the man page
// generator, build tag mangen): the shipped binary has none.
var extraCommands []func(root *cobra.Command)

// underJournald reports whether w is the journal stream systemd gave
// this process (JOURNAL_STREAM names its device and inode).
func underJournald(w io.Writer) bool {
	f, ok := w.(*os.File)
	js := os.Getenv("JOURNAL_STREAM")
	if !ok || js == "" {
		return false
	}
	var st syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &st) != nil {
		return false
	}
	return js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// journalWriter prefixes each log line with its syslog priority in
// sd-daemon(3) form ("<3>" for errors), so that journalctl -p works.
type journalWriter struct{ w io.Writer }

func (j journalWriter) Write(p []byte) (int, error) {
	prio := "<6>" // info
	for _, l := range []struct{ tag, prio string }{
		{"[ERROR]", "<3>"}, {"[WARN]", "<4>"}, {"[DEBUG]", "<7>"}, {"[TRACE]", "<7>"},
	} {
		if bytes.HasPrefix(p, []byte(l.tag)) {
			prio = l.prio
			break
		}
	}
	if _, err := j.w.Write(append([]byte(prio), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// errCheckFailed makes nlbd --check-config exit 1 after its report.
var errCheckFailed = errors.New("check failed")

// checkConfig is nlbd --check-config: every configuration error at once,
// then (for a valid file) the host's preflight checks, as PASS/WARN/FAIL
// lines or one JSON document. It changes nothing on the host.
func checkConfig(w io.Writer, path, bpffs string, asJSON bool) error {
	type report struct {
		Config string        `json:"config"`
		OK     bool          `json:"ok"`
		Errors []string      `json:"errors"`
		Checks []agent.Check `json:"checks"`
	}
	rep := report{Config: path, Errors: []string{}, Checks: []agent.Check{}}
	r, err := config.Load(path)
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				rep.Errors = append(rep.Errors, e.Error())
			}
		} else {
			rep.Errors = append(rep.Errors, err.Error())
		}
	} else {
		rep.Checks = agent.Preflight(r, bpffs, agent.UnitPaths)
	}
	rep.OK = len(rep.Errors) == 0 && !agent.Failed(rep.Checks)
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		for _, e := range rep.Errors {
			fmt.Fprintln(w, "FAIL  config  "+e)
		}
		if r != nil {
			config.PrintSummary(w, r)
			fmt.Fprintln(w)
			agent.PrintChecks(w, rep.Checks)
		}
	}
	if !rep.OK {
		return errCheckFailed
	}
	return nil
}
