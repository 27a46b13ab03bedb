package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// keygenCommand writes a new random key file (any role: cluster, admin,
// monitor), readable by its owner only.
func keygenCommand() *cobra.Command {
	var force bool
	c := &cobra.Command{
		Use:   "keygen FILE",
		Short: "Write a new random key file (mode 0600): a cluster, admin or monitor key",
		Long: `keygen writes 32 random bytes, base64-encoded, to FILE with mode 0600.
It refuses to overwrite an existing file unless --force. Use one file per
role: the cluster key (hosts only), the admin key (commands), the monitor
key (read-only commands); see docs/config.md.`,
		Args: func(c *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{errors.New("keygen needs one FILE")}
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			var raw [32]byte
			if _, err := rand.Read(raw[:]); err != nil {
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			f, err := os.OpenFile(args[0], flags, 0o600)
			if err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			// An existing file keeps its mode on --force: make it 0600.
			if err := f.Chmod(0o600); err != nil {
				f.Close()
				return fmt.Errorf("keygen: %w", err)
			}
			if _, err := fmt.Fprintln(f, base64.StdEncoding.EncodeToString(raw[:])); err != nil {
				f.Close()
				return fmt.Errorf("keygen: %w", err)
			}
			if err := f.Close(); err != nil {
				return fmt.Errorf("keygen: %w", err)
			}
			fmt.Fprintf(c.OutOrStdout(), "wrote a new key to %s (mode 0600)\n", args[0])
			return nil
		},
	}
	c.Flags().BoolVar(&force, "force", false, "overwrite an existing file")
	return c
}
