package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nlbproject/nlb/filter"
	"github.com/nlbproject/nlb/health"
	"github.com/nlbproject/nlb/macmode"
)

func writeKey(t *testing.T, n int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cluster.key")
	if err := os.WriteFile(p, []byte(strings.Repeat("k", n)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func exampleConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../examples/host1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Replace(string(b), "/etc/nlb/cluster.key", writeKey(t, 40), 1)
}

func TestExampleConfig(t *testing.T) {
	c, err := Parse([]byte(exampleConfig(t)))
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Resolve()
	if err != nil {
		t.Fatal(err)
	}
	if r.HostID != 1 || r.MACMode != macmode.Unicast || r.RemotePort != 2504 || len(r.Rules) != 3 {
		t.Fatalf("resolved %+v", r)
	}
	// Canonical order: the VIP-specific rule first, names follow.
	if r.RuleNames[0] != "https" || r.Rules[0].AllVIPs() {
		t.Fatalf("rule order %v", r.RuleNames)
	}
	if r.HostRules[0].Weight != 60 || r.HostRules[1].Weight != EqualWeight {
		t.Fatalf("host rules %+v", r.HostRules)
	}
	if i, err := r.RuleIndex("80"); err != nil || r.RuleNames[i] != "http" {
		t.Fatalf("RuleIndex(80) = %d, %v", i, err)
	}
	if i, err := r.RuleIndex("198.18.0.100:443"); err != nil || r.RuleNames[i] != "https" {
		t.Fatalf("RuleIndex(vip:443) = %d, %v", i, err)
	}
	var zero filter.Seed
	if r.Seed == zero {
		t.Fatal("seed not derived from the key")
	}
	hc := r.HealthChecks()
	want := health.Check{Rule: "http", Kind: health.KindHTTP, Target: "http://127.0.0.1:80/healthz", Expect: 200,
		Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	if len(hc) != 1 || !reflect.DeepEqual(*hc[0], want) {
		t.Fatalf("health checks %+v, want [%+v]", hc, want)
	}
}

// TestConfigErrors: each bad input yields an error naming the key.
func TestConfigErrors(t *testing.T) {
	runEdits(t, []edit{
		{"unknown key", "  name: web", "  name: web\n  colour: blue", "colour"},
		{"bad vip", "vips: [198.18.0.100]", "vips: [198.18.0.300]", "cluster.vips[0]"},
		{"multicast vip", "vips: [198.18.0.100]", "vips: [239.1.1.1]", "cluster.vips[0]"},
		{"ipv6 primary vip", "vips: [198.18.0.100]", "vips: [\"2001:db8::1\", 198.18.0.100]", "cluster.vips[0]"},
		{"ipv4-mapped vip", "vips: [198.18.0.100]", "vips: [198.18.0.100, \"::ffff:198.18.0.101\"]", "cluster.vips[1]"},
		{"link-local vip", "vips: [198.18.0.100]", "vips: [198.18.0.100, \"fe80::1\"]", "cluster.vips[1]"},
		{"ipv6 network prefix", "  mac_mode: unicast", "  mac_mode: unicast\n  ipv6_network_prefix: 129", "cluster.ipv6_network_prefix"},
		{"duplicate vip", "vips: [198.18.0.100]", "vips: [198.18.0.100, 198.18.0.100]", "cluster.vips[1]"},
		{"no vips", "vips: [198.18.0.100]", "vips: []", "cluster.vips"},
		{"mode", "mac_mode: unicast", "mac_mode: broadcast", "cluster.mac_mode"},
		{"period", "period: 100ms", "period: 1ms", "cluster.heartbeat.period"},
		{"period syntax", "period: 100ms", "period: fast", "line"},
		{"tolerance", "loss_tolerance: 10", "loss_tolerance: 1", "cluster.heartbeat.loss_tolerance"},
		{"seed", "  mac_mode: unicast", "  mac_mode: unicast\n  hash_seed: abc", "cluster.hash_seed"},
		{"seed short", "  mac_mode: unicast", "  mac_mode: unicast\n  hash_seed: 00112233445566778899aabbccddee", "cluster.hash_seed"},
		{"seed long", "  mac_mode: unicast", "  mac_mode: unicast\n  hash_seed: 00112233445566778899aabbccddeeff00", "cluster.hash_seed"},
		{"grace too long", "  mac_mode: unicast", "  mac_mode: unicast\n  grace: 2h", "cluster.grace"},
		{"grace negative", "  mac_mode: unicast", "  mac_mode: unicast\n  grace: -1s", "cluster.grace"},
		{"duplicate rule name", "    - name: https", "    - name: http", "cluster.port_rules[1].name"},
		{"port range", "ports: \"80\"", "ports: \"90-80\"", "cluster.port_rules[0].ports"},
		{"port number", "ports: \"80\"", "ports: \"eighty\"", "cluster.port_rules[0].ports"},
		{"port big", "ports: \"80\"", "ports: \"70000\"", "cluster.port_rules[0].ports"},
		{"protocol", "protocol: udp", "protocol: sctp", "cluster.port_rules[2].protocol"},
		{"rule mode", "mode: single", "mode: some", "cluster.port_rules[2].mode"},
		{"affinity", "affinity: none\n    - name: https", "affinity: sticky\n    - name: https", "cluster.port_rules[0].affinity"},
		{"rule vip not a vip", "vip: 198.18.0.100\n      ports", "vip: 198.18.0.101\n      ports", "cluster.port_rules[1].vip"},
		{"overlap", "ports: \"53\"\n      protocol: udp", "ports: \"53-80\"\n      protocol: both", "cluster.port_rules[2].ports"},
		{"remote port", "ports: \"53\"", "ports: \"2504\"", "cluster.port_rules[2].ports"},
		{"quorum voters", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum_voters: 2", "cluster.quorum_voters"},
		{"quorum voters range", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum_voters: 65", "cluster.quorum_voters"},
		{"quorum mode", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum: sometimes", "cluster.quorum"},
		{"voters without quorum", "  mac_mode: unicast", "  mac_mode: unicast\n  quorum: off\n  quorum_voters: 3", "cluster.quorum_voters"},
		{"host id", "id: 1", "id: 65", "host.id"},
		{"host id zero", "id: 1", "id: 0", "host.id"},
		{"interface", "interface: eth0", "interface: averyveryverylongname0", "host.interface"},
		{"dedicated ip", "dedicated_ip: 198.18.0.1/24", "dedicated_ip: 198.18.0.1", "host.dedicated_ip"},
		{"dedicated ip6", "dedicated_ip: 198.18.0.1/24", "dedicated_ip: 198.18.0.1/24\n  dedicated_ip6: 198.18.0.2/24", "host.dedicated_ip6"},
		{"dedicated ip6 link-local", "dedicated_ip: 198.18.0.1/24", "dedicated_ip: 198.18.0.1/24\n  dedicated_ip6: fe80::1/64", "host.dedicated_ip6"},
		{"dedicated is vip", "dedicated_ip: 198.18.0.1/24", "dedicated_ip: 198.18.0.100/24", "host.dedicated_ip"},
		{"state", "initial_state: started", "initial_state: running", "host.initial_state"},
		{"metrics", "metrics_address: 127.0.0.1:9425", "metrics_address: localhost", "host.metrics_address"},
		{"weight", "weight: \"60\"", "weight: \"101\"", "host.rules.https.weight"},
		{"priority range", "priority: 1", "priority: 99", "host.rules.dns.priority"},
		{"priority on multiple", "weight: \"60\"", "weight: \"60\"\n      priority: 2", "host.rules.https.priority"},
		{"unknown rule", "    dns:\n", "    smtp:\n", "host.rules"},
		{"health type", "type: http, url", "type: ping, url", "host.rules.http.health.type"},
		{"health url", `url: "http://127.0.0.1:80/healthz"`, `url: "127.0.0.1:80"`, "host.rules.http.health.url"},
		{"health scheme", `url: "http://127.0.0.1:80/healthz"`, `url: "https://127.0.0.1/"`, "host.rules.http.health.url"},
		{"health expect", "expect: 200", "expect: 42", "host.rules.http.health.expect"},
		{"health timeout", "timeout: 1s", "timeout: 3s", "host.rules.http.health.timeout"},
		{"health interval", "interval: 2s", "interval: 10ms", "host.rules.http.health.interval"},
		{"health rise", "rise: 2", "rise: -1", "host.rules.http.health.rise"},
		{"health fall", "fall: 3", "fall: 101", "host.rules.http.health.fall"},
		{"health tcp address", "type: http, url", "type: tcp, address: nowhere, url", "host.rules.http.health.address"},
		{"health tcp url", "type: http, url", "type: tcp, address: \"127.0.0.1:80\", url", "host.rules.http.health.url"},
		{"health exec command", "type: http, url", "type: exec, url", "host.rules.http.health.command"},
		{"health duration", "interval: 2s", "interval: often", "line"},
	})
}

// TestDualStackVIPs: IPv6 VIPs follow the IPv4 ones whatever the written
// order (the primary stays first); the default IPv6 prefix leaves the
// digest as it was, another one changes it.
func TestDualStackVIPs(t *testing.T) {
	resolve := func(text string) *Resolved {
		t.Helper()
		c, err := Parse([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		r, err := c.Resolve()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	base := exampleConfig(t)
	dual := strings.Replace(base, "vips: [198.18.0.100]", `vips: [198.18.0.100, "2001:2::100", 198.18.0.101]`, 1)
	r := resolve(dual)
	if got := fmt.Sprint(r.VIPs); got != "[198.18.0.100 198.18.0.101 2001:2::100]" || r.Prefix6 != 64 {
		t.Fatalf("VIPs %s, prefix /%d", got, r.Prefix6)
	}
	if resolve(base).Digest() != resolve(strings.Replace(base, "  mac_mode: unicast", "  mac_mode: unicast\n  ipv6_network_prefix: 64", 1)).Digest() {
		t.Error("the default IPv6 prefix, written out, changed the digest")
	}
	// A rule for the IPv6 VIP, named by "[VIP]:port" too.
	r6 := resolve(strings.Replace(dual, "vip: 198.18.0.100\n      ports", "vip: \"2001:2::100\"\n      ports", 1))
	if i, err := r6.RuleIndex("[2001:2::100]:443"); err != nil || r6.Rules[i].VIP != netip.MustParseAddr("2001:2::100") {
		t.Errorf("RuleIndex([2001:2::100]:443) = %d, %v", i, err)
	}
	if _, err := r6.RuleIndex("198.18.0.100:443"); err == nil {
		t.Error("the IPv4 VIP's port 443 found the IPv6 VIP's rule")
	}
	r48 := resolve(strings.Replace(dual, "  mac_mode: unicast", "  mac_mode: unicast\n  ipv6_network_prefix: 48", 1))
	if r48.Prefix6 != 48 || r48.Digest() == r.Digest() {
		t.Errorf("prefix /%d, digest unchanged: %v", r48.Prefix6, r48.Digest() == r.Digest())
	}
}

func TestKeyFileErrors(t *testing.T) {
	for _, tt := range []struct {
		name, path, want string
	}{
		{"missing", "/nonexistent/nlb.key", "unreadable"},
		{"short", writeKey(t, 16), "at least 32"},
	} {
		src := strings.Replace(exampleConfig(t), "key_file: ", "key_file: "+tt.path+" #", 1)
		c, err := Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Resolve()
		if err == nil || !strings.Contains(err.Error(), "cluster.key_file") || !strings.Contains(err.Error(), tt.want) {
			t.Fatalf("%s: error %v", tt.name, err)
		}
	}
}

func TestEmptyConfig(t *testing.T) {
	if _, err := Parse(nil); err == nil {
		t.Fatal("empty config accepted")
	}
}

// TestKeyFiles: key files readable by group or others are refused unless
// allowed; a rotation needs a pinned seed; a next role key needs its own
// current one; role keys default to the cluster key.
func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	aaaa := write("aaaa.key", strings.Repeat("a", 32), 0o644)
	good := write("good.key", strings.Repeat("g", 32), 0o600)
	next := write("next.key", strings.Repeat("n", 32), 0o600)
	admin := write("admin.key", strings.Repeat("d", 32), 0o600)
	// load replaces the example's key_file line with keys (cluster
	// section lines), appends remoteLines to remote_control and host
	// lines to the host section.
	load := func(keys, host string, remoteLines ...string) (*Resolved, error) {
		b, err := os.ReadFile("../examples/host1.yaml")
		if err != nil {
			t.Fatal(err)
		}
		src := strings.Replace(string(b), "  key_file: /etc/nlb/cluster.key", keys, 1)
		src = strings.Replace(src, "    port: 2504", "    port: 2504\n"+strings.Join(remoteLines, "\n"), 1)
		src = strings.Replace(src, "  id: 1", "  id: 1\n"+host, 1)
		c, err := Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return c.Resolve()
	}
	if _, err := load("  key_file: "+aaaa, ""); err == nil || !strings.Contains(err.Error(), "mode 0644 lets group or others read the key") {
		t.Errorf("world-readable key: %v", err)
	}
	if _, err := load("  key_file: "+aaaa, "  allow_readable_key_files: true"); err != nil {
		t.Errorf("world-readable key with the opt-out: %v", err)
	}
	if _, err := load("  key_file: "+good+"\n  next_key_file: "+next, ""); err == nil || !strings.Contains(err.Error(), "cluster.hash_seed") || !strings.Contains(err.Error(), "hash_seed: ") {
		t.Errorf("rotation without a pinned seed: %v", err)
	}
	r, err := load("  key_file: "+good+"\n  next_key_file: "+next+"\n  hash_seed: 00112233445566778899aabbccddeeff", "")
	if err != nil || len(r.Keys.Heartbeat()) != 2 || string(r.Keys.NextCluster) != strings.Repeat("n", 32) {
		t.Errorf("rotation: %v", err)
	}
	if len(r.Keys.Remote().Admin) != 2 || len(r.Keys.Remote().Monitor) != 2 {
		t.Errorf("role keys do not follow the cluster keyring: %+v", r.Keys.Remote())
	}
	if _, err := load("  key_file: "+good, "", "    next_monitor_key_file: "+next); err == nil || !strings.Contains(err.Error(), "needs monitor_key_file") {
		t.Errorf("next monitor key alone: %v", err)
	}
	if _, err := load("  key_file: "+good, "", "    next_admin_key_file: "+next); err == nil || !strings.Contains(err.Error(), "needs admin_key_file") {
		t.Errorf("next admin key alone: %v", err)
	}
	r, err = load("  key_file: "+good, "", "    admin_key_file: "+admin)
	if err != nil || string(r.Keys.Admin) != strings.Repeat("d", 32) || string(r.Keys.Monitor) != strings.Repeat("d", 32) {
		t.Errorf("admin key: %v %+v", err, r.Keys)
	}
}

// TestAllErrorsAtOnce: a file with several mistakes gets every one
// reported, in config terms, misspelt keys with the likely intended one.
func TestAllErrorsAtOnce(t *testing.T) {
	y := exampleConfig(t)
	y = strings.Replace(y, "loss_tolerance:", "loss_tolerence:", 1)
	y = strings.Replace(y, "id: 1", "id: 0", 1)
	y = strings.Replace(y, "mac_mode: unicast", "mac_mode: broadcast", 1)
	if strings.Count(y, "loss_tolerence") != 1 || !strings.Contains(y, "id: 0") || !strings.Contains(y, "broadcast") {
		t.Fatal("the example changed: adjust the edits")
	}
	_, err := Parse([]byte(y))
	if err == nil || !strings.Contains(err.Error(), `cluster.heartbeat.loss_tolerence: unknown key`) ||
		!strings.Contains(err.Error(), `did you mean "loss_tolerance"?`) {
		t.Fatalf("misspelt key: %v", err)
	}
	y = strings.Replace(y, "loss_tolerence:", "loss_tolerance:", 1)
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Resolve()
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("want 2 errors, got %v", err)
	}
	for _, want := range []string{"cluster.mac_mode", "host.id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s not reported: %v", want, err)
		}
	}
}
