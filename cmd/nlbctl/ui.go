package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/internal/webui"
	"github.com/nlbproject/nlb/remote"
)

func uiCommand(t *target) *cobra.Command {
	var listen string
	var interval time.Duration
	c := &cobra.Command{
		Use:   "ui",
		Short: "Serve a web view of the cluster (hosts, bucket maps, rates, events; commands with the admin key)",
		Long: `ui serves a web page on --listen (default 127.0.0.1:8080) from assets built
into nlbctl: nothing is fetched from elsewhere. The page shows every host (state,
epoch, members, health notes, version, share, packet rates), each rule's 4096
buckets coloured by owner with retained and dirty ones marked, and the event
history. It talks to the cluster the way nlbctl does (--cluster, --host or the
local socket, with --key-file and --role). With the admin key it offers start,
stop, drainstop, suspend, resume and per-rule enable, disable and drain, each
confirmed on the page; with --role monitor it is read-only.

Whoever can open the page can do what its key allows: keep it on loopback, or
put an authenticating proxy in front of it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ap, err := netip.ParseAddrPort(listen)
			if err != nil {
				return usageError{fmt.Errorf("--listen %q: want IP:port, e.g. 127.0.0.1:8080", listen)}
			}
			role, err := remote.ParseRole(t.role)
			if err != nil {
				return usageError{fmt.Errorf("--role: %w", err)}
			}
			title := t.cluster + t.host
			if title == "" {
				title = "local agent"
			}
			// Check the target before serving: a wrong key or address is
			// said now, not on the page.
			res, err := t.send(remote.CmdQuery, remote.Args{})
			if err != nil {
				return err
			}
			if len(res.Replies) == 0 {
				return outcome(res)
			}
			srv := webui.New(webui.Options{Send: t.sendFunc(), Role: role, Interval: interval, Title: title})
			l, err := net.Listen("tcp", ap.String())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go srv.Run(ctx)
			hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				hs.Shutdown(sctx)
			}()
			if !ap.Addr().IsLoopback() {
				fmt.Fprintf(cmd.ErrOrStderr(), "nlbctl ui: warning: %s is reachable beyond this machine; anyone who opens the page can do what the %s key allows\n", ap, role)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "nlbctl ui: serving %s (%s) on http://%s/\n", title, role, l.Addr())
			if err := hs.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	c.Flags().StringVar(&listen, "listen", "127.0.0.1:8080", "address to serve the page on")
	c.Flags().DurationVar(&interval, "interval", time.Second, "how often to ask the cluster")
	return c
}
