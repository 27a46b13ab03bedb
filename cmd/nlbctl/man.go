//go:build mangen

package main

import (
	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/nlbproject/nlb/internal/version"
)

// `go run -tags mangen ./cmd/nlbctl man DIR` writes the man pages (make
// package): built only with the tag, so the shipped binary does not carry
// the generator or its markdown libraries.
func init() {
	extraCommands = append(extraCommands, func(root *cobra.Command) {
		root.AddCommand(&cobra.Command{
			Use: "man DIR", Hidden: true, Args: cobra.ExactArgs(1),
			RunE: func(_ *cobra.Command, args []string) error {
				root.DisableAutoGenTag = true
				return doc.GenManTree(root, &doc.GenManHeader{Title: "NLBCTL", Section: "1",
					Source: "nlb " + version.String(), Manual: "nlb manual"}, args[0])
			},
		})
	})
}
