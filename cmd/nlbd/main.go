// Command nlbd is the nlb agent that runs on every cluster host.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/agent"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var configPath, checkPath string
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
	if err := root.Execute(); err != nil {
		fmt.Fprintln(stderr, "nlbd:", err)
		return 1
	}
	return 0
}
