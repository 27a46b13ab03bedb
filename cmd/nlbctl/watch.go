package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/remote"
)

// watchCommand is a live view of the cluster: one query per interval,
// redrawn in place, with packet rates from the difference of two queries.
func watchCommand(t *target) *cobra.Command {
	var interval time.Duration
	var count int
	c := &cobra.Command{
		Use:   "watch",
		Short: "Live view: hosts, states, bucket shares and packets/s, refreshed in place",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if interval < 100*time.Millisecond {
				return usageError{fmt.Errorf("--interval %v: at least 100ms", interval)}
			}
			stop := make(chan os.Signal, 1)
			signal.Notify(stop, os.Interrupt)
			defer signal.Stop(stop)
			w := c.OutOrStdout()
			tty := isTerminal(w)
			prev := map[uint8]sample{}
			var res *remote.Result
			for i := 0; count == 0 || i < count; i++ {
				if i > 0 {
					select {
					case <-stop:
						return nil
					case <-time.After(interval):
					}
				}
				var err error
				if res, err = t.send(remote.CmdQuery, remote.Args{}); err != nil {
					return err
				}
				var b strings.Builder
				prev = drawWatch(&b, res, prev, time.Now())
				if tty {
					io.WriteString(w, "\033[H\033[2J") // home, clear
				} else if i > 0 {
					io.WriteString(w, "\n")
				}
				io.WriteString(w, b.String())
			}
			// With --count, exit as query would on the last refresh (3:
			// nobody answered, 4: some did not), for scripts.
			return outcome(res)
		},
	}
	c.Flags().DurationVar(&interval, "interval", time.Second, "refresh interval")
	c.Flags().IntVar(&count, "count", 0, "stop after this many refreshes (0: until Ctrl-C)")
	return c
}

type sample struct {
	at                time.Time
	accepted, dropped uint64
}

// drawWatch writes one frame and returns the samples for the next.
func drawWatch(w io.Writer, res *remote.Result, prev map[uint8]sample, now time.Time) map[uint8]sample {
	next := map[uint8]sample{}
	fmt.Fprintf(w, "nlb cluster — %s\n\n", now.Format("15:04:05"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSTATE\tEPOCH\tSHARE\tACCEPTED/s\tDROPPED/s\tNOTES")
	replies := append([]remote.HostReply(nil), res.Replies...)
	sort.Slice(replies, func(i, j int) bool { return replies[i].Host < replies[j].Host })
	for _, r := range replies {
		var q remote.QueryResult
		if r.Status != remote.StatusOK || json.Unmarshal(r.Result, &q) != nil {
			fmt.Fprintf(tw, "%d\t%s\t-\t-\t-\t-\terror: %s\n", r.Host, r.State, r.Error)
			continue
		}
		s := sample{at: now, accepted: q.Accepted, dropped: q.Dropped}
		next[q.Host] = s
		acc, drop := "-", "-"
		if p, ok := prev[q.Host]; ok && now.After(p.at) && s.accepted >= p.accepted && s.dropped >= p.dropped {
			sec := now.Sub(p.at).Seconds()
			acc = fmt.Sprintf("%.0f", float64(s.accepted-p.accepted)/sec)
			drop = fmt.Sprintf("%.0f", float64(s.dropped-p.dropped)/sec)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\t%s\t%s\n", q.Host, q.State, q.Epoch, share(q.Owned), acc, drop, q.NotesLine())
	}
	silent := map[uint8]bool{}
	for _, row := range remote.SilentRows(res) {
		silent[row.Host] = true
		fmt.Fprintf(tw, "%d\tno answer\t-\t-\t-\t-\t%s\n", row.Host, row.Notes)
	}
	for _, id := range res.Missing {
		if !silent[id] {
			fmt.Fprintf(tw, "%d\tno answer\t-\t-\t-\t-\t-\n", id)
		}
	}
	tw.Flush()
	return next
}

// share is the host's fraction of the buckets of every table but the
// default one, e.g. "33.3%" (or per rule when they differ).
func share(owned map[string]int) string {
	rules := make([]string, 0, len(owned))
	for r := range owned {
		if r != "default" {
			rules = append(rules, r)
		}
	}
	sort.Strings(rules)
	var parts []string
	same := true
	for i, r := range rules {
		if i > 0 && owned[r] != owned[rules[0]] {
			same = false
		}
		parts = append(parts, fmt.Sprintf("%s %.1f%%", r, 100*float64(owned[r])/filter.Buckets))
	}
	if len(rules) == 0 {
		return "-"
	}
	if same {
		return fmt.Sprintf("%.1f%%", 100*float64(owned[rules[0]])/filter.Buckets)
	}
	return strings.Join(parts, " ")
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
