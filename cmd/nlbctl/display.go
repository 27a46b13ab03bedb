package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/remote"
)

func queryportCommand(t *target) *cobra.Command {
	return &cobra.Command{
		Use:   "queryport [RULE]",
		Short: "Show each port rule's state on each host: weight, buckets, packets, bytes, connections",
		Long: `queryport shows, for each port rule (or the one named: name, VIP:port, port,
or "default" for VIP traffic matching no rule) and each host that answers, the
rule's state on that host (enabled, disabled, draining, health-down), its
weight and priority, the buckets it owns (taking new flows) and retains
(carrying held flows only), the packets its data plane accepted and dropped and
the bytes it accepted since it was loaded, and the TCP connections it holds
(-1: not counted). Like nlb.exe queryport.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, a []string) error {
			var args remote.Args
			if len(a) == 1 {
				args.Rule = a[0]
			}
			return t.run(c, remote.CmdPorts, args)
		},
	}
}

func printPorts(w io.Writer, ps []remote.PortsResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "RULE\tHOST\tSTATE\tWEIGHT\tPRIORITY\tOWNED\tRETAINED\tACCEPTED\tDROPPED\tBYTES\tCONNECTIONS\tSPEC")
	type row struct {
		host uint8
		r    remote.PortRule
	}
	var order []string
	byRule := map[string][]row{}
	for _, p := range ps {
		for _, r := range p.Rules {
			if _, ok := byRule[r.Name]; !ok {
				order = append(order, r.Name)
			}
			byRule[r.Name] = append(byRule[r.Name], row{p.Host, r})
		}
	}
	for _, name := range order {
		for _, x := range byRule[name] {
			r := x.r
			fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\n", r.Name, x.host, r.State, r.Weight, r.Priority,
				r.Owned, r.Retained, r.Accepted, r.Dropped, r.AcceptedBytes, r.Connections, r.Spec)
		}
	}
}

// displayEvents is how many recent events display shows.
const displayEvents = 20

func displayCommand(t *target) *cobra.Command {
	return &cobra.Command{
		Use:   "display",
		Short: "Show one host's whole picture: configuration, state, rules and recent events",
		Long: `display shows one host (the local agent, --host IP, or --cluster VIP with
--target ID): its effective configuration (params), its state (query), its port
rules (queryport) and its last 20 events. Like nlb.exe display.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if t.cluster != "" && t.hostID == 0 {
				return usageError{errors.New("display shows one host: add --target ID (or use --host IP)")}
			}
			parts := map[string]*remote.Result{}
			for _, p := range []struct {
				name string
				cmd  remote.Command
			}{{"params", remote.CmdParams}, {"query", remote.CmdQuery}, {"ports", remote.CmdPorts}} {
				res, err := t.send(p.cmd, remote.Args{})
				if err != nil {
					return err
				}
				if err := outcome(res); err != nil {
					return err
				}
				parts[p.name] = res
			}
			var reader remote.EventReader
			evs, res, err := reader.Read(t.sendFunc(), 0, 0)
			if err != nil {
				return err
			}
			if err := outcome(res); err != nil {
				return err
			}
			if len(evs) > displayEvents {
				evs = evs[len(evs)-displayEvents:]
			}
			w := c.OutOrStdout()
			if t.asJSON {
				one := func(name string) json.RawMessage { return parts[name].Replies[0].Result }
				return writeJSON(w, map[string]any{"host": parts["query"].Replies[0].Host,
					"params": one("params"), "query": one("query"), "ports": one("ports"),
					"events": append([]remote.HostEvent{}, evs...)})
			}
			section := func(title string) { fmt.Fprintf(w, "\n=== %s ===\n", title) }
			fmt.Fprintf(w, "host %d\n", parts["query"].Replies[0].Host)
			section("configuration")
			printResult(w, remote.CmdParams, parts["params"])
			section("state")
			printResult(w, remote.CmdQuery, parts["query"])
			section("port rules")
			printPorts(w, remote.Ports(parts["ports"]))
			section(fmt.Sprintf("last %d events", len(evs)))
			printEvents(w, evs, true)
			return nil
		},
	}
}
