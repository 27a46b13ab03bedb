package agent

import (
	"fmt"

	"github.com/nlbproject/nlb/config"
	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/heartbeat"
	"github.com/nlbproject/nlb/remote"
)

// ruleTotal is one table's data-plane counters.
type ruleTotal struct{ accepted, dropped, bytes uint64 }

// markChars are the characters of PortRule.Marks, by filter.Mark.
var markChars = [...]byte{filter.MarkNone: '-', filter.MarkOwned: 'o', filter.MarkDirty: 'd', filter.MarkRetained: 'r'}

// ports answers the ports command (nlbctl queryport, display, ui): per
// rule, this host's state, setting, buckets, counters and connections;
// with args.Buckets, the bucket owners and marks of the rule args.Rule
// names (one rule: a map is 12 KB of the reply's 16).
func (a *Agent) ports(cfg *config.Resolved, node *Node, fst *filter.State, args remote.Args) (*remote.PortsResult, error) {
	st := node.Status()
	res := &remote.PortsResult{Host: cfg.HostID, State: st.State.String(), Rules: []remote.PortRule{}}
	if st.Epoch != nil {
		res.Epoch = st.Epoch.Num
	}
	only := -2 // every rule
	if args.Rule != "" {
		if args.Rule == "default" {
			only = filter.DefaultRule
		} else {
			i, err := cfg.RuleIndex(args.Rule)
			if err != nil {
				return nil, err
			}
			only = i
		}
	} else if args.Buckets {
		return nil, fmt.Errorf("ports: bucket maps are sent for one rule at a time; name it")
	}
	totals := a.ruleTotals()
	conns, cerr := a.connections()
	tables := make([]int, 0, len(cfg.Rules)+1)
	for t := range cfg.Rules {
		tables = append(tables, t)
	}
	tables = append(tables, filter.DefaultRule)
	for _, t := range tables {
		if only != -2 && t != only {
			continue
		}
		pr := remote.PortRule{Name: a.ruleName(cfg, t), Spec: "traffic to a VIP matching no rule", State: "enabled",
			Accepted: totals[t].accepted, Dropped: totals[t].dropped, AcceptedBytes: totals[t].bytes, Connections: -1}
		if cerr == nil {
			pr.Connections = conns[t]
		}
		if t < len(cfg.Rules) {
			pr.Spec = cfg.Rules[t].String()
			pr.Weight, pr.Priority = cfg.HostRules[t].Weight, cfg.HostRules[t].Priority
			switch {
			case t < len(st.RuleFlags) && st.RuleFlags[t]&heartbeat.RuleDisabled != 0:
				pr.State = "disabled"
			case t < len(st.RuleFlags) && st.RuleFlags[t]&heartbeat.RuleDraining != 0:
				pr.State = "draining"
			case t < len(st.HealthDown) && st.HealthDown[t]:
				pr.State = "health-down"
			}
		}
		if m := fst.Marks[t]; m != nil {
			for _, k := range m {
				switch k {
				case filter.MarkOwned, filter.MarkDirty:
					pr.Owned++
				case filter.MarkRetained:
					pr.Retained++
				}
			}
		}
		if args.Buckets {
			owners := make([]byte, 0, 2*filter.Buckets)
			marks := make([]byte, filter.Buckets)
			var table *filter.Table
			if st.Epoch != nil {
				table = st.Epoch.Tables[t]
			}
			for b := range filter.Buckets {
				var o uint8
				if table != nil {
					o = table[b]
				}
				owners = fmt.Appendf(owners, "%02x", o)
				marks[b] = '-'
				if m := fst.Marks[t]; m != nil && int(m[b]) < len(markChars) {
					marks[b] = markChars[m[b]]
				}
			}
			pr.Owners, pr.Marks = string(owners), string(marks)
		}
		res.Rules = append(res.Rules, pr)
	}
	return res, nil
}
