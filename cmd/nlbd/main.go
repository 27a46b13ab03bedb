// Command nlbd is the nlb agent that runs on every cluster host.
package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/agent"
	"github.com/nlbproject/nlb/macmode"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var configPath, checkPath, stateDir string
	var restore bool
	root := &cobra.Command{
		Use:           "nlbd --config FILE | --check-config FILE",
		Short:         "nlb agent: distributed load balancing without a dispatcher",
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if checkPath != "" {
				r, err := agent.LoadConfig(checkPath)
				if err != nil {
					return err
				}
				agent.PrintSummary(cmd.OutOrStdout(), r)
				return nil
			}
			if configPath == "" {
				return fmt.Errorf("--config or --check-config is required")
			}
			if restore {
				// Undo what a killed agent left on the NIC, from its
				// state file; nothing to do if there is none.
				r, err := agent.LoadConfig(configPath)
				if err != nil {
					return err
				}
				path := filepath.Join(stateDir, r.Interface+".state")
				if err := macmode.Restore(path); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "restored %s (state file %s)\n", r.Interface, path)
				return nil
			}
			if _, err := agent.LoadConfig(configPath); err != nil {
				return err
			}
			return fmt.Errorf("the agent runtime is not built yet (issue: nlbd end to end); only --check-config works")
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	root.Flags().StringVar(&configPath, "config", "", "configuration file")
	root.Flags().StringVar(&checkPath, "check-config", "", "validate FILE, print a summary and exit; touches nothing")
	root.Flags().BoolVar(&restore, "restore", false, "undo what a killed agent changed on the cluster NIC (MAC, addresses, sysctls), from its state file, and exit")
	root.Flags().StringVar(&stateDir, "state-dir", "/run/nlb", "directory of the NIC state files")
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "nlbd:", err)
		return 1
	}
	return 0
}
