package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/remote"
)

// onlyHost returns t aimed at host id alone (with --cluster, as
// --target); other targets reach one host already.
func (t *target) onlyHost(id uint8) *target {
	c := *t
	if c.cluster != "" {
		c.hostID = id
	}
	return &c
}

// sendFunc sends as the flags say, or to host id alone.
func (t *target) sendFunc() remote.SendFunc {
	return func(id uint8, cmd remote.Command, args remote.Args) (*remote.Result, error) {
		if id == 0 {
			return t.send(cmd, args)
		}
		return t.onlyHost(id).send(cmd, args)
	}
}

// parseSince reads --since: a sequence number, or a duration back from
// now (returned as Unix ns).
func parseSince(s string) (seq uint64, sinceTime int64, err error) {
	if s == "" {
		return 0, 0, nil
	}
	if n, err := strconv.ParseUint(s, 10, 64); err == nil {
		return n, 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, 0, usageError{fmt.Errorf("--since %q: want a sequence number (42) or a positive duration (1h, 90s)", s)}
	}
	return 0, time.Now().Add(-d).UnixNano(), nil
}

func eventsCommand(t *target) *cobra.Command {
	var since string
	var follow bool
	var interval time.Duration
	c := &cobra.Command{
		Use:   "events",
		Short: "Show the hosts' event history: joins, evictions, state changes, commands with their source, health, reloads, refusals",
		Long: `Show the event history each host keeps (the last 1024 events since its agent
started), oldest first, merged over the hosts that answer by time. --since takes
a sequence number (events after it) or a duration (events in the last one).
--follow keeps printing new events; with --json it prints one JSON object a
line. Each event's ON is the host whose history holds it, HOST the host it is
about.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			seq, sinceTime, err := parseSince(since)
			if err != nil {
				return err
			}
			if seq != 0 && t.cluster != "" && t.hostID == 0 {
				return usageError{fmt.Errorf("--since SEQ reads one host's history (sequences are per host): add --target ID, or give a duration")}
			}
			var reader remote.EventReader
			w := cmd.OutOrStdout()
			evs, res, err := reader.Read(t.sendFunc(), seq, sinceTime)
			if err != nil {
				return err
			}
			if !follow {
				if t.asJSON {
					if err := writeJSON(w, struct {
						Events  []remote.HostEvent `json:"events"`
						Missing remote.HostIDs     `json:"missing"`
						Refused remote.HostIDs     `json:"refused"`
					}{append([]remote.HostEvent{}, evs...), append(remote.HostIDs{}, res.Missing...), append(remote.HostIDs{}, res.Refused...)}); err != nil {
						return err
					}
				} else {
					printEvents(w, evs, true)
				}
				return outcome(res)
			}
			if err := outcome(res); err != nil {
				return err
			}
			header := true
			for {
				if t.asJSON {
					for _, e := range evs {
						if err := writeJSONLine(w, e); err != nil {
							return err
						}
					}
				} else {
					printEvents(w, evs, header)
					header = header && len(evs) == 0
				}
				select {
				case <-cmd.Context().Done():
					return nil
				case <-time.After(interval):
				}
				// Each poll asks every host for its recent events (those
				// already printed are skipped by their sequence): hosts that
				// join are followed too. The window covers the poll
				// interval and the clock skew remote control allows.
				if evs, _, err = reader.Read(t.sendFunc(), 0, time.Now().Add(-interval-remote.MaxSkew).UnixNano()); err != nil {
					return err
				}
			}
		},
	}
	c.Flags().StringVar(&since, "since", "", "events after this sequence number, or in this last duration (1h)")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	c.Flags().DurationVar(&interval, "interval", time.Second, "with --follow, how often to ask")
	return c
}

func printEvents(w io.Writer, evs []remote.HostEvent, header bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	if header {
		fmt.Fprintln(tw, "TIME\tON\tSEQ\tEVENT\tHOST\tDETAIL\tSOURCE")
	}
	for _, e := range evs {
		ts := e.Time
		if tm, err := time.Parse(time.RFC3339Nano, e.Time); err == nil {
			ts = tm.Local().Format("2006-01-02 15:04:05.000")
		}
		src := e.Source
		if src == "" {
			src = "-"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\t%s\n", ts, e.On, e.Seq, e.Kind, e.Host, e.Detail, src)
	}
}
