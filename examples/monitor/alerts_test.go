package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// promtool returns the path of promtool (Debian's prometheus package),
// failing the test under CI=true when it is missing and skipping it
// elsewhere.
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("promtool not found (apt-get install prometheus): %v", err)
		}
		t.Skip("promtool not found (apt-get install prometheus)")
	}
	return path
}

// TestAlertRules checks alerts.yml with promtool and runs its unit tests
// (alerts_test.yml: each rule fires on a case and stays silent on another).
func TestAlertRules(t *testing.T) {
	bin := promtool(t)
	out, err := exec.Command(bin, "check", "rules", "alerts.yml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS: 5 rules found") {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "test", "rules", "alerts_test.yml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	// Every rule has a test that names it, and a summary and a description.
	rules, tests := readFile(t, "alerts.yml"), readFile(t, "alerts_test.yml")
	names := regexp.MustCompile(`(?m)^\s*- alert: (\S+)$`).FindAllStringSubmatch(rules, -1)
	if len(names) != 5 {
		t.Fatalf("%d alerts in alerts.yml, want 5", len(names))
	}
	for _, n := range names {
		if !strings.Contains(tests, "alertname: "+n[1]+"\n") {
			t.Errorf("alerts_test.yml has no test of %s", n[1])
		}
	}
	for _, key := range []string{"summary:", "description:"} {
		if c := strings.Count(rules, key); c != len(names) {
			t.Errorf("%d %s annotations for %d alerts", c, key, len(names))
		}
	}
}

// TestAlertRulesUseExportedMetrics: every corework metric the rules read is
// served by the prometheus subcommand with -demo, so no rule watches a name
// that does not exist (it would never fire).
func TestAlertRulesUseExportedMetrics(t *testing.T) {
	used := map[string]bool{}
	for _, e := range ruleExprs(readFile(t, "alerts.yml")) {
		for _, n := range metricNames(e) {
			if n != "up" { // Prometheus's own, per target
				used[n] = true
			}
		}
	}
	if len(used) < 4 {
		t.Fatalf("only %d metric names found in the rules: %v", len(used), used)
	}
	for _, n := range unservedWithDemo(t, used) {
		t.Errorf("the alert rules read %s, which -demo does not serve", n)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ruleExprs returns the expr fields of a rules file: a value on the same
// line, or a block scalar (|) of the lines indented below it.
func ruleExprs(text string) []string {
	var exprs []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		k := strings.Index(lines[i], "expr:")
		if k < 0 || strings.TrimSpace(lines[i][:k]) != "" {
			continue
		}
		v := strings.TrimSpace(lines[i][k+len("expr:"):])
		if v != "|" && v != ">" {
			exprs = append(exprs, v)
			continue
		}
		var block []string
		for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || indent(lines[i+1]) > k) {
			i++
			block = append(block, strings.TrimSpace(lines[i]))
		}
		exprs = append(exprs, strings.Join(block, " "))
	}
	return exprs
}

func indent(s string) int { return len(s) - len(strings.TrimLeft(s, " ")) }
