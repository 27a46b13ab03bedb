//go:build mangen

package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/nlbproject/nlb/internal/version"
)

// `go run -tags mangen ./cmd/nlbd man DIR` writes the man pages (make
// package): built only with the tag, so the shipped binary does not carry
// the generator or its markdown libraries.
func init() {
	extraCommands = append(extraCommands, func(root *cobra.Command) {
		root.CompletionOptions.DisableDefaultCmd = true // nlbd has no commands to complete
		root.AddCommand(&cobra.Command{
			Use: "man DIR", Hidden: true, Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				root.DisableAutoGenTag = true
				return doc.GenManTree(root, &doc.GenManHeader{Title: "NLBD", Section: "8",
					Source: "nlb " + version.String(), Manual: "nlb manual"}, args[0])
			},
		})
	})
}
