package deploy

import (
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// TestAlertRules: the shipped alerting rules pass promtool check rules,
// and every metric they use is one the agent documents (and so exports:
// agent.TestMetricsDocumented).
func TestAlertRules(t *testing.T) {
	const rules = "prometheus/nlb-alerts.yml"
	if _, err := exec.LookPath("promtool"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("promtool not found (make deps installs the prometheus package)")
		}
		t.Skip("promtool not found: make deps installs it")
	}
	if out, err := exec.Command("promtool", "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(rules)
	doc, _ := os.ReadFile("../docs/observability.md")
	for _, m := range regexp.MustCompile(`\bnlb_[a-z_]+`).FindAllString(string(b), -1) {
		base := regexp.MustCompile(`_(bucket|count|sum)$`).ReplaceAllString(m, "")
		if !regexp.MustCompile("`" + base + "`").Match(doc) {
			t.Errorf("the rules use %s, which docs/observability.md does not list", m)
		}
	}
}
