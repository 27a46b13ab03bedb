package agent

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMetricsDocumented: every metric the agent exports is documented in
// docs/observability.md, and the Grafana dashboard uses only metrics the
// agent exports, so neither drifts from the code.
func TestMetricsDocumented(t *testing.T) {
	ch := make(chan *prometheus.Desc, 64)
	collector{}.describeAll(ch)
	close(ch)
	exported := map[string]bool{}
	re := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range ch {
		m := re.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %v", d)
		}
		exported[m[1]] = true
	}
	if len(exported) < 15 {
		t.Fatalf("only %d metrics described", len(exported))
	}
	doc, err := os.ReadFile("../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range exported {
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("metric %s is not documented in docs/observability.md", name)
		}
	}
	dash, err := os.ReadFile("../docs/grafana/nlb-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range regexp.MustCompile(`nlb_[a-z_]+`).FindAllString(string(dash), -1) {
		if !exported[name] {
			t.Errorf("the dashboard uses %s, which the agent does not export", name)
		}
	}
}
