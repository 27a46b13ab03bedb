package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/nlbproject/nlb/capture"
	"github.com/nlbproject/nlb/config"

	"github.com/spf13/cobra"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/remote"
)

type filterHost struct {
	ID      uint8  `json:"id"`
	Verdict string `json:"verdict"`
	Reason  string `json:"reason"`
}

type filterResult struct {
	Flow     string         `json:"flow"`
	Rule     string         `json:"rule"`
	RuleSpec string         `json:"rule_spec"`
	Bucket   int            `json:"bucket"`
	Accepted remote.HostIDs `json:"accepted_by"`
	Hosts    []filterHost   `json:"hosts"`
}

func filterCommand(t *target) *cobra.Command {
	var members, clientStr, vipStr, proto, pcap string
	c := &cobra.Command{
		Use:   "filter --client IP:PORT --vip IP:PORT [--proto tcp|udp] [--config FILE --members 1,2,3]",
		Short: "Show which host accepts a client flow",
		Long: `filter says which host takes a client flow.

Live (the default): every targeted agent answers from the tables it is
filtering with right now, with its own verdict and the bucket's owner.

Offline (--members with --config): the filter model is evaluated for the
cluster described by the config file, as if the listed members had just
formed it, each with this file's weights and priorities. It is the same
model the kernel program is tested against.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pcap != "" {
				return t.filterPcap(cmd, pcap, members)
			}
			if clientStr == "" || vipStr == "" {
				return usageError{fmt.Errorf("--client and --vip are required")}
			}
			if members == "" {
				return t.liveFilter(cmd, clientStr, vipStr, proto)
			}
			if t.config == "" {
				return usageError{fmt.Errorf("--members (offline) needs --config")}
			}
			r, err := config.Load(t.config)
			if err != nil {
				return err
			}
			ids, err := parseMembers(members)
			if err != nil {
				return usageError{err}
			}
			client, vip, err := filter.ParseFlow(clientStr, vipStr)
			if err != nil {
				return usageError{err}
			}
			p := &filter.Packet{Src: client.Addr(), Dst: vip.Addr(), SPort: client.Port(), DPort: vip.Port()}
			switch proto {
			case "tcp":
				p.Proto, p.TCPFlags = 6, 0x02 // a SYN: who takes a new connection
			case "udp":
				p.Proto = 17
			default:
				return usageError{fmt.Errorf("--proto %q: want tcp or udp", proto)}
			}
			res := evaluate(r, ids, p)
			res.Flow = fmt.Sprintf("%s -> %s/%s", client, vip, proto)
			if t.asJSON {
				return writeJSON(cmd.OutOrStdout(), res)
			}
			printFilter(cmd, res)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&members, "members", "", "offline: host IDs of the cluster to model, comma-separated (e.g. 1,2,3)")
	f.StringVar(&clientStr, "client", "", "client address and port")
	f.StringVar(&vipStr, "vip", "", "VIP address and port")
	f.StringVar(&proto, "proto", "tcp", "tcp or udp")
	f.StringVar(&pcap, "pcap", "", "replay the VIP traffic of a pcap file (needs --config): per host, flows, packets and shares; the busiest buckets")
	return c
}

// liveTaker asks the agents which host takes a flow: the one whose
// filter accepts it now (0 if none does).
func (t *target) liveTaker(_ []byte, fl capture.Flow) (uint8, error) {
	res, err := t.send(remote.CmdFilter, remote.Args{Client: fl.Client.String(), Dest: fl.VIP.String(), Proto: fl.Proto})
	if err != nil {
		return 0, err
	}
	var taker uint8
	for _, rep := range res.Replies {
		var fr remote.FilterResult
		if rep.Status == remote.StatusOK && json.Unmarshal(rep.Result, &fr) == nil && fr.Verdict == "accept" {
			taker = rep.Host
		}
	}
	return taker, nil
}

// filterPcap replays a capture through the model (--members) or the live
// tables (every distinct flow asked of the agents, as filter does).
func (t *target) filterPcap(cmd *cobra.Command, path, members string) error {
	if t.config == "" {
		return usageError{fmt.Errorf("--pcap needs --config (the VIPs, rules and hash seed)")}
	}
	r, err := config.Load(t.config)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var ids []uint8
	var take capture.Taker
	if members != "" {
		if ids, err = parseMembers(members); err != nil {
			return usageError{err}
		}
		hosts := map[uint8][]filter.RuleSetting{}
		for _, id := range ids {
			hosts[id] = r.Settings()
		}
		take = capture.ModelTaker(capture.NewModel(r, hosts))
	} else {
		take = t.liveTaker
		// The members are the hosts that answered; known after the
		// replay, so count them first with one query.
		res, err := t.send(remote.CmdQuery, remote.Args{})
		if err != nil {
			return err
		}
		for _, rep := range res.Replies {
			ids = append(ids, rep.Host)
		}
		if len(ids) == 0 {
			return outcome(res)
		}
	}
	rep, err := capture.Replay(f, r, ids, take)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	w := cmd.OutOrStdout()
	if t.asJSON {
		return writeJSON(w, rep)
	}
	fmt.Fprintf(w, "%d frames, %d to the VIPs, %d flows (%d taken by no host)\n\n", rep.Frames, rep.VIPFrames, rep.Flows, rep.Untaken)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tFLOWS\tSHARE\tEXPECTED\tIMBALANCE\tPACKETS\tSHARE")
	for _, h := range rep.Hosts {
		fmt.Fprintf(tw, "%d\t%d\t%.1f%%\t%.1f%%\t%.2f\t%d\t%.1f%%\n", h.Host, h.Flows, 100*h.Share, 100*h.Expected, h.Imbalance, h.Packets, 100*h.PacketShare)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nbusiest buckets:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tBUCKET\tHOST\tFLOWS\tPACKETS")
	for _, b := range rep.Busiest {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", b.Rule, b.Bucket, b.Host, b.Flows, b.Packets)
	}
	return tw.Flush()
}

// liveFilter asks the agents.
func (t *target) liveFilter(cmd *cobra.Command, client, vip, proto string) error {
	res, err := t.send(remote.CmdFilter, remote.Args{Client: client, Dest: vip, Proto: proto})
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if t.asJSON {
		if err := writeJSON(w, jsonResult(res)); err != nil {
			return err
		}
		return outcome(res)
	}
	fmt.Fprintf(w, "flow      %s -> %s/%s\n", client, vip, proto)
	var accepted []uint8
	owners := map[uint8]bool{}
	fmt.Fprintf(w, "\n%-6s %-8s %-24s %-8s %-7s %s\n", "HOST", "VERDICT", "REASON", "RULE", "BUCKET", "OWNER")
	for _, r := range res.Replies {
		var f remote.FilterResult
		if r.Status != remote.StatusOK || json.Unmarshal(r.Result, &f) != nil {
			fmt.Fprintf(w, "%-6d error: %s\n", r.Host, r.Error)
			continue
		}
		if f.Verdict == "accept" || f.Verdict == "pass" {
			accepted = append(accepted, r.Host)
		}
		owners[f.Owner] = true
		fmt.Fprintf(w, "%-6d %-8s %-24s %-8s %-7d %d\n", r.Host, f.Verdict, f.Reason, f.Rule, f.Bucket, f.Owner)
	}
	switch len(accepted) {
	case 0:
		fmt.Fprintln(w, "\naccepted  by no host that answered")
	case 1:
		fmt.Fprintf(w, "\naccepted  by host %d\n", accepted[0])
	default:
		fmt.Fprintf(w, "\npassed    to hosts %v\n", accepted)
	}
	if len(owners) > 1 {
		fmt.Fprintln(w, "warning   the hosts disagree on the owner: the cluster is converging")
	}
	return outcome(res)
}

func parseMembers(s string) ([]uint8, error) {
	seen := map[uint8]bool{}
	var ids []uint8
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 || n > filter.MaxHostID {
			return nil, fmt.Errorf("--members: %q is not a host ID (1..%d)", part, filter.MaxHostID)
		}
		if seen[uint8(n)] {
			return nil, fmt.Errorf("--members: host %d listed twice", n)
		}
		seen[uint8(n)] = true
		ids = append(ids, uint8(n))
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids, nil
}

// evaluate runs the model on every member's state.
func evaluate(r *config.Resolved, ids []uint8, p *filter.Packet) filterResult {
	hosts := map[uint8][]filter.RuleSetting{}
	for _, id := range ids {
		hosts[id] = r.Settings()
	}
	res := filterResult{Bucket: -1, Accepted: []uint8{}}
	ds := capture.NewModel(r, hosts).Decide(p.Frame())
	for _, d := range ds {
		switch {
		case d.Rule == filter.DefaultRule:
			res.Rule, res.RuleSpec = "default", "no rule matches: default host"
		case d.Rule >= 0:
			rule := r.Rules[d.Rule]
			res.Rule = r.RuleNames[d.Rule]
			res.RuleSpec = fmt.Sprintf("%s, %s, affinity %s", rule, rule.Mode, rule.Affinity)
		default:
			res.Rule, res.RuleSpec = "none", "not filtered"
		}
		res.Bucket = d.Bucket
		res.Hosts = append(res.Hosts, filterHost{ID: d.ID, Verdict: d.Verdict.String(), Reason: d.Reason.String()})
	}
	res.Accepted = append(res.Accepted, capture.Takers(ds)...)
	return res
}

func printFilter(cmd *cobra.Command, res filterResult) {
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "flow      %s\n", res.Flow)
	fmt.Fprintf(w, "rule      %s (%s)\n", res.Rule, res.RuleSpec)
	if res.Bucket >= 0 {
		fmt.Fprintf(w, "bucket    %d of %d\n", res.Bucket, filter.Buckets)
	}
	switch len(res.Accepted) {
	case 0:
		fmt.Fprintln(w, "accepted  by no host")
	case 1:
		fmt.Fprintf(w, "accepted  by host %d\n", res.Accepted[0])
	default:
		fmt.Fprintf(w, "passed    to every host %v\n", res.Accepted)
	}
	fmt.Fprintf(w, "\n%-6s %-8s %s\n", "HOST", "VERDICT", "REASON")
	for _, h := range res.Hosts {
		fmt.Fprintf(w, "%-6d %-8s %s\n", h.ID, h.Verdict, h.Reason)
	}
}
