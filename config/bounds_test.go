package config

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestConfigBoundaries: every numeric limit is checked at its edges: the
// limit itself is accepted, one past it is refused naming the key.
func TestConfigBoundaries(t *testing.T) {
	vips := func(n int) string {
		var v []string
		for i := 0; i < n; i++ {
			v = append(v, fmt.Sprintf("198.18.0.%d", 100+i))
		}
		return "vips: [" + strings.Join(v, ", ") + "]"
	}
	rules := func(n int) string {
		var b strings.Builder
		b.WriteString("port_rules:\n")
		for i := 0; i < n; i++ {
			fmt.Fprintf(&b, "    - {name: r%d, ports: \"%d\", protocol: tcp}\n", i, 1000+i)
		}
		return b.String()
	}
	health := `health: {type: http, url: "http://127.0.0.1:80/healthz", expect: 200, interval: 2s, timeout: 1s, rise: 2, fall: 3}`
	withHealth := func(h string) string {
		return strings.Replace(health, "expect: 200, interval: 2s, timeout: 1s, rise: 2, fall: 3", h, 1)
	}
	cases := []edit{
		{"name 64", "  name: web", "  name: " + strings.Repeat("n", 64), ""},
		{"name 65", "  name: web", "  name: " + strings.Repeat("n", 65), "cluster.name"},
		{"16 vips", "vips: [198.18.0.100]", vips(16), ""},
		{"17 vips", "vips: [198.18.0.100]", vips(17), "cluster.vips"},
		{"period 10ms", "period: 100ms", "period: 10ms", ""},
		{"period 9ms", "period: 100ms", "period: 9ms", "cluster.heartbeat.period"},
		{"period 10s", "period: 100ms", "period: 10s", ""},
		{"period 10.001s", "period: 100ms", "period: 10001ms", "cluster.heartbeat.period"},
		{"tolerance 2", "loss_tolerance: 10", "loss_tolerance: 2", ""},
		{"tolerance 100", "loss_tolerance: 10", "loss_tolerance: 100", ""},
		{"tolerance 101", "loss_tolerance: 10", "loss_tolerance: 101", "cluster.heartbeat.loss_tolerance"},
		{"quorum 3", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum_voters: 3", ""},
		{"quorum 64", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum_voters: 64", ""},
		{"quorum off", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum: off", ""},
		{"quorum majority", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum: majority", ""},
		{"quorum -1", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum_voters: -1", "cluster.quorum_voters"},
		{"grace 0s", "  mac_mode: unicast", "  mac_mode: unicast\n  grace: 0s", ""},
		{"grace 1h", "  mac_mode: unicast", "  mac_mode: unicast\n  grace: 1h", ""},
		{"grace 1h1s", "  mac_mode: unicast", "  mac_mode: unicast\n  grace: 1h0m1s", "cluster.grace"},
		{"32 rules", "  port_rules:\n", "  " + rules(29), ""},
		{"33 rules", "  port_rules:\n", "  " + rules(30), "cluster.port_rules"},
		{"port range of one", "ports: \"80\"", "ports: \"80-80\"", ""},
		{"remote port, tcp", "ports: \"53\"\n      protocol: udp", "ports: \"2504\"\n      protocol: tcp", ""},
		{"remote port inside a udp range", "ports: \"53\"", "ports: \"2500-2510\"", ""},
		{"host id 64", "id: 1", "id: 64", ""},
		{"interface 15", "interface: eth0", "interface: " + strings.Repeat("e", 15), ""},
		{"interface 16", "interface: eth0", "interface: " + strings.Repeat("e", 16), "host.interface"},
		{"interface with a slash", "interface: eth0", "interface: \"eth/0\"", "host.interface"},
		{"drain 0s", "initial_state: started", "initial_state: started\n  drain_timeout: 0s", ""},
		{"drain -1s", "initial_state: started", "initial_state: started\n  drain_timeout: -1s", "host.drain_timeout"},
		{"weight 0", "weight: \"60\"", "weight: \"0\"", ""},
		{"weight 100", "weight: \"60\"", "weight: \"100\"", ""},
		{"priority 64", "priority: 1", "priority: 64", ""},
		{"priority 65", "priority: 1", "priority: 65", "host.rules.dns.priority"},
		{"expect 100", health, withHealth("expect: 100"), ""},
		{"expect 599", health, withHealth("expect: 599"), ""},
		{"expect 99", health, withHealth("expect: 99"), "host.rules.http.health.expect"},
		{"expect 600", health, withHealth("expect: 600"), "host.rules.http.health.expect"},
		{"interval 100ms", health, withHealth("interval: 100ms"), ""},
		{"interval 99ms", health, withHealth("interval: 99ms"), "host.rules.http.health.interval"},
		{"timeout = interval", health, withHealth("interval: 1s, timeout: 1s"), ""},
		{"timeout > interval", health, withHealth("interval: 1s, timeout: 1001ms"), "host.rules.http.health.timeout"},
		{"timeout negative", health, withHealth("timeout: -1s"), "host.rules.http.health.timeout"},
		{"rise 1", health, withHealth("rise: 1"), ""},
		{"rise 100", health, withHealth("rise: 100"), ""},
		{"rise 101", health, withHealth("rise: 101"), "host.rules.http.health.rise"},
		{"fall 1", health, withHealth("fall: 1"), ""},
		{"fall 100", health, withHealth("fall: 100"), ""},
		{"fall 0 is the default", health, withHealth("fall: 0"), ""},
		{"fall -1", health, withHealth("fall: -1"), "host.rules.http.health.fall"},
		{"tcp check", health, `health: {type: tcp, address: "127.0.0.1:80"}`, ""},
		{"exec check", health, `health: {type: exec, command: [/bin/true]}`, ""},
		{"rule vip not an address", "vip: 198.18.0.100\n      ports", "vip: nope\n      ports", "cluster.port_rules[1].vip"},
		{"tcp check with expect", health, `health: {type: tcp, address: "127.0.0.1:80", expect: 200}`, "host.rules.http.health.expect"},
		{"tcp check with a command", health, `health: {type: tcp, address: "127.0.0.1:80", command: [x]}`, "host.rules.http.health.command"},
		{"http check with a command", health, `health: {type: http, url: "http://127.0.0.1/", command: [x]}`, "host.rules.http.health.command"},
		{"http check with an address", health, `health: {type: http, url: "http://127.0.0.1/", address: "127.0.0.1:80"}`, "host.rules.http.health.address"},
		{"exec check with a url", health, `health: {type: exec, command: [x], url: "http://127.0.0.1/"}`, "host.rules.http.health.url"},
		{"exec check with an address", health, `health: {type: exec, command: [x], address: "127.0.0.1:80"}`, "host.rules.http.health.address"},
		{"exec check with expect", health, `health: {type: exec, command: [x], expect: 200}`, "host.rules.http.health.expect"},
		{"exec check with an empty command", health, `health: {type: exec, command: [""]}`, "host.rules.http.health.command"},
	}
	runEdits(t, cases)
}

// TestRuleIndex: rules are found by name, by port, and by VIP:port.
func TestRuleIndex(t *testing.T) {
	c, err := Parse([]byte(exampleConfig(t)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{"http": "http", "80": "http", "443": "https", "198.18.0.100:443": "https",
		"all:80": "http", "53": "dns", "all:53": "dns"} {
		i, err := r.RuleIndex(ref)
		if err != nil || r.RuleNames[i] != want {
			t.Errorf("RuleIndex(%q) = %d %v, want %s", ref, i, err, want)
		}
	}
	for _, ref := range []string{"nope", "81", "198.18.0.101:443", "70000", "198.18.0.100:53x"} {
		if i, err := r.RuleIndex(ref); err == nil {
			t.Errorf("RuleIndex(%q) = %d, want an error", ref, i)
		}
	}
}

// TestLoad: Load names the file in its errors, and the summary says what
// the configuration does.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir + "/missing.yaml"); err == nil || !strings.Contains(err.Error(), "read config") {
		t.Errorf("missing file: %v", err)
	}
	bad := dir + "/bad.yaml"
	os.WriteFile(bad, []byte("cluster: {colour: blue}"), 0o600)
	if _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+": cluster.colour: unknown key") {
		t.Errorf("bad yaml: %v", err)
	}
	invalid := dir + "/invalid.yaml"
	os.WriteFile(invalid, []byte(strings.Replace(exampleConfig(t), "id: 1", "id: 0", 1)), 0o600)
	if _, err := Load(invalid); err == nil || !strings.HasPrefix(err.Error(), invalid+": host.id") {
		t.Errorf("invalid: %v", err)
	}
	good := dir + "/good.yaml"
	os.WriteFile(good, []byte(strings.Replace(exampleConfig(t), "  mac_mode: unicast", "  mac_mode: unicast\n  quorum_voters: 3", 1)), 0o600)
	r, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	PrintSummary(&b, r)
	for _, want := range []string{`config ok: cluster "web", host 1 on eth0 (198.18.0.1/24)`, "dead after 10 missed (1s)",
		"remote:      udp/2504", "quorum:      majority of hosts 1..3", "state:       started at start", "port rules:  3",
		"https        198.18.0.100:443/tcp"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, b.String())
		}
	}
	r.QuorumVoters, r.RemotePort = 0, 0
	b.Reset()
	PrintSummary(&b, r)
	if !strings.Contains(b.String(), "quorum:      majority of the members last agreed") || !strings.Contains(b.String(), "remote:      off") {
		t.Errorf("summary:\n%s", b.String())
	}
	r.Quorum = false
	b.Reset()
	PrintSummary(&b, r)
	if !strings.Contains(b.String(), "quorum:      off") {
		t.Errorf("summary:\n%s", b.String())
	}
	if e := (&Error{Key: "k", Msg: "m"}).Error(); e != "k: m" {
		t.Errorf("error without a value: %q", e)
	}
}

// TestDefaults: the documented defaults (docs/config.md).
func TestDefaults(t *testing.T) {
	d := DefaultConfig()
	if time.Duration(d.Cluster.Heartbeat.Period) != 30*time.Millisecond || d.Cluster.Heartbeat.LossTolerance != 10 ||
		time.Duration(d.Cluster.Grace) != 5*time.Second || time.Duration(d.Host.DrainTimeout) != 30*time.Second ||
		d.Cluster.RemoteControl.Port != 2504 || d.Cluster.RemoteControl.Enabled || d.Cluster.MACMode != "unicast" ||
		d.Host.InitialState != "started" || d.Host.OnExit != "drainstop" || d.Cluster.Name != "nlb" {
		t.Fatalf("defaults: %+v", d)
	}
}

// TestKeysEqual: a key set equals itself, and differs when any secret
// differs or is missing.
func TestKeysEqual(t *testing.T) {
	k := Keys{Cluster: []byte("c"), Admin: []byte("a"), Monitor: []byte("m")}
	same := k
	if !k.Equal(&same) {
		t.Fatal("a key set differs from its copy")
	}
	for _, o := range []Keys{
		{Cluster: []byte("x"), Admin: []byte("a"), Monitor: []byte("m")},
		{Cluster: []byte("c"), NextCluster: []byte("n"), Admin: []byte("a"), Monitor: []byte("m")},
		{Cluster: []byte("c"), Admin: []byte("a")},
		{Cluster: []byte("c"), Admin: []byte("a"), Monitor: []byte("m"), NextMonitor: []byte{}},
	} {
		if k.Equal(&o) || o.Equal(&k) {
			t.Errorf("%+v equals %+v", o, k)
		}
	}
}

// edit changes the example configuration (old → new, once) and says what
// must follow: wantKey "" accepts it, otherwise the error names wantKey.
type edit struct{ name, old, new, wantKey string }

// runEdits parses and resolves each edit of the example configuration.
func runEdits(t *testing.T, edits []edit) {
	t.Helper()
	for _, tc := range edits {
		t.Run(tc.name, func(t *testing.T) {
			src := exampleConfig(t)
			if !strings.Contains(src, tc.old) {
				t.Fatalf("test bug: %q not in the example", tc.old)
			}
			src = strings.Replace(src, tc.old, tc.new, 1)
			c, err := Parse([]byte(src))
			if err == nil {
				_, err = c.Resolve()
			}
			switch {
			case tc.wantKey == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.wantKey != "" && (err == nil || !strings.Contains(err.Error(), tc.wantKey)):
				t.Fatalf("got %v, want an error naming %s", err, tc.wantKey)
			}
		})
	}
}
