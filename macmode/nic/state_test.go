package nic

import (
	"encoding/json"
	"strings"
	"testing"
)

const goodState = `{
  "interface": "eth1",
  "mode": "unicast",
  "vips": ["198.18.0.100"],
  "changes": [
    {"kind": "sysctl", "link": "eth1", "value": "/proc/sys/net/ipv6/conf/eth1/disable_ipv6=1", "old": "0"},
    {"kind": "mac", "link": "eth1", "value": "02:bf:c6:12:00:64", "old": "52:54:00:12:34:56"},
    {"kind": "addr", "link": "eth1", "value": "198.18.0.100/32"},
    {"kind": "addr", "link": "lo", "value": "198.18.0.101/32"},
    {"kind": "maddr", "link": "eth1", "value": "03:bf:c6:12:00:64"},
    {"kind": "group", "link": "eth1", "value": "239.255.0.100/32"}
  ],
  "complete": true
}`

// TestParseState: a state file setup writes is accepted; any change that
// setup would not make (another path, another link, a bad value) is
// refused with an error naming it.
func TestParseState(t *testing.T) {
	st, err := ParseState([]byte(goodState), "eth1")
	if err != nil || len(st.Changes) != 6 || !st.Complete {
		t.Fatalf("good state: %v %+v", err, st)
	}
	for _, tc := range []struct {
		name, from, to, want string
	}{
		{"other interface", `"interface": "eth1"`, `"interface": "eth2"`, "written for interface"},
		{"sysctl elsewhere", "/proc/sys/net/ipv6/conf/eth1/disable_ipv6=1", "/etc/passwd=1", "not a sysctl"},
		{"sysctl of another link", "/proc/sys/net/ipv6/conf/eth1/disable_ipv6=1", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6=1", "not a sysctl"},
		{"sysctl old value", `"old": "0"`, `"old": "root::0:0"`, "not a small number"},
		{"mac on another link", `{"kind": "mac", "link": "eth1"`, `{"kind": "mac", "link": "eth0"`, "MAC change is on eth1"},
		{"bad mac", "52:54:00:12:34:56", "52:54:00", "not an Ethernet MAC"},
		{"bad prefix", "198.18.0.100/32", "198.18.0.100/99", "prefix"},
		{"address on another link", `"link": "lo"`, `"link": "eth0"`, "on eth1 or lo"},
		{"unknown kind", `"kind": "maddr"`, `"kind": "route"`, "unknown change"},
		{"unknown field", `"complete": true`, `"complete": true, "exec": "rm"`, "unknown field"},
		{"bad mode", `"mode": "unicast"`, `"mode": "broadcast"`, "unknown mode"},
		{"bad vip", `["198.18.0.100"]`, `["nope"]`, "not an address"},
		{"truncated", goodState, goodState[:40], "not a state file"},
	} {
		src := strings.Replace(goodState, tc.from, tc.to, 1)
		if src == goodState && tc.from != goodState {
			t.Fatalf("%s: test bug: %q not found", tc.name, tc.from)
		}
		if _, err := ParseState([]byte(src), "eth1"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// FuzzParseState: any input either parses into changes setup could have
// made, or is an error; it never panics.
func FuzzParseState(f *testing.F) {
	f.Add([]byte(goodState))
	f.Add([]byte(`{"interface":"eth1","mode":"igmp","changes":[{"kind":"addr","link":"lo","value":"x"}]}`))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseState(b, "eth1")
		if err != nil {
			return
		}
		for _, c := range st.Changes {
			if err := checkChange(c, "eth1"); err != nil {
				t.Fatalf("accepted a change it refuses: %v", err)
			}
			if c.Link != "eth1" && c.Link != "lo" {
				t.Fatalf("accepted a change on %q", c.Link)
			}
		}
		if _, err := json.Marshal(st); err != nil {
			t.Fatal(err)
		}
	})
}
