// Command nlbctl manages an nlb cluster. Today it answers, offline, which
// host takes a flow (`nlbctl filter`); remote-control commands arrive with
// the remote package.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
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
		Use:           "nlbctl",
		Short:         "Manage an nlb load-balancing cluster",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	for _, c := range commands() {
		root.AddCommand(c)
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "nlbctl:", err)
		var u usageError
		if errors.As(err, &u) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}

func commands() []*cobra.Command {
	return []*cobra.Command{
		filterCommand(),
	}
}
