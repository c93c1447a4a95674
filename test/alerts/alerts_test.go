// Package alerts_test checks the alerts certmint ships,
// deploy/monitoring/certmint.rules.yaml, with Prometheus's own promtool
// (Debian's prometheus package; hack/deps.sh installs it): the rules are
// valid, and in the series of testdata/certmint.rules.test.yaml (renewals
// overdue, certificates about to expire, failures rising, an issuer not
// Ready, a CA expiring, and healthy neighbours of each) they raise exactly
// the alerts expected, with their labels and texts.
package alerts_test

import (
	"os"
	"os/exec"
	"slices"
	"testing"

	"sigs.k8s.io/yaml"
)

const (
	rulesFile = "../../deploy/monitoring/certmint.rules.yaml"
	testsFile = "testdata/certmint.rules.test.yaml"
)

func promtool(t *testing.T, args ...string) {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed (Debian package prometheus; hack/deps.sh installs it): %v", err)
	}
	out, err := exec.CommandContext(t.Context(), bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %v: %v\n%s", args, err, out)
	}
}

func TestTheShippedAlertsAreValidAndFireAsSpecified(t *testing.T) {
	promtool(t, "check", "rules", rulesFile)
	promtool(t, "test", "rules", testsFile)
}

// TestEveryShippedAlertIsSpecifiedFiringAndQuiet keeps the promtool tests
// in step with the rules: each alert needs a case where it fires and one
// where, in series close to those, it does not.
func TestEveryShippedAlertIsSpecifiedFiringAndQuiet(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `json:"alert"`
			} `json:"rules"`
		} `json:"groups"`
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	for file, into := range map[string]any{rulesFile: &rules, testsFile: &tests} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(data, into); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, test := range tests.Tests {
		for _, c := range test.AlertRuleTest {
			if len(c.ExpAlerts) > 0 {
				fires[c.Alertname] = true
			} else {
				quiet[c.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if !fires[r.Alert] {
				t.Errorf("%s has no case in %s where it fires", r.Alert, testsFile)
			}
			if !quiet[r.Alert] {
				t.Errorf("%s has no case in %s where it stays quiet", r.Alert, testsFile)
			}
		}
	}
	if len(alerts) == 0 {
		t.Fatalf("%s holds no alerts", rulesFile)
	}
	for name := range fires {
		if !slices.Contains(alerts, name) {
			t.Errorf("%s tests %s, which %s does not define", testsFile, name, rulesFile)
		}
	}
}
