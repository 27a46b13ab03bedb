// Command nlbctl manages an nlb cluster: the local agent through its
// control socket, or the whole cluster (or one host) over authenticated
// UDP remote control. See docs/cli.md.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/internal/version"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

type usageError struct{ error }

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes nlbctl with args, writing to stdout and stderr, and returns
// the exit code. Commands are defined in one table (commands) so that they
// can be tested with injected I/O.
func run(args []string, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:   "nlbctl [--cluster VIP | --host IP] [--key-file F] COMMAND [ARGS]",
		Short: "Manage an nlb load-balancing cluster",
		Long: `nlbctl manages an nlb cluster. With no --cluster or --host it talks to the
local agent through its control socket. With --cluster VIP every host
answers; with --host IP (a dedicated IP) that host alone does.

Exit codes: 0 every targeted host answered and succeeded; 1 error;
2 usage; 3 no host answered; 4 some hosts did not answer or failed;
5 refused (stale clock, replay, or a monitor key asking to change).`,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	t := &target{}
	t.flags(root)
	for _, c := range commands(t) {
		root.AddCommand(c)
	}
	for _, add := range extraCommands {
		add(root)
	}
	usageArgs(root)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "nlbctl:", err)
		var u usageError
		var e codeError
		switch {
		case errors.As(err, &u), strings.HasPrefix(err.Error(), "unknown command"):
			return exitUsage
		case errors.As(err, &e):
			return e.code
		}
		return exitError
	}
	return exitOK
}

func commands(t *target) []*cobra.Command {
	return append(remoteCommands(t), filterCommand(t), watchCommand(t), keygenCommand(), versionCommand(t), captureCommand(t),
		eventsCommand(t), queryportCommand(t), displayCommand(t), uiCommand(t))
}

// usageArgs makes every command's argument errors usage errors (exit 2).
func usageArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageArgs(sub)
	}
}

// extraCommands add build-time commands to the root (the man page
// generator, build tag mangen): the shipped binary has none.
var extraCommands []func(root *cobra.Command)

// versionCommand prints nlbctl's own version; each host's is in query.
func versionCommand(t *target) *cobra.Command {
	return &cobra.Command{
		Use: "version", Short: "Show nlbctl's version (each host's is in query)", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if t.asJSON {
				return writeJSON(c.OutOrStdout(), map[string]string{"nlbctl": version.String(), "go": version.Go()})
			}
			fmt.Fprintf(c.OutOrStdout(), "nlbctl %s (%s)\n", version.String(), version.Go())
			return nil
		},
	}
}

// writeJSONLine writes v as one compact line (streams of events).
func writeJSONLine(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// writeJSON is every --json output: indented, one document, and no HTML
// escaping (a "<" in an error stays "<" for jq).
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
