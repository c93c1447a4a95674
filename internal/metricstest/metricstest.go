// Package metricstest reads Prometheus collectors as a scrape does, for
// tests that check series by name, labels and value.
package metricstest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Series gathers cs through a pedantic registry, as a scrape does (one
// that fails on inconsistent or duplicate series), and returns each gauge's
// value by its name and labels in the exposition format, such as
// `certmint_x{issuer="a",pod="b"}`.
func Series(t testing.TB, cs ...prometheus.Collector) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gathering: %v", err)
	}
	out := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			out[f.GetName()+"{"+strings.Join(labels, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	return out
}

// Format renders series one per line, sorted, for failure messages.
func Format(s map[string]float64) string {
	var lines []string
	for k, v := range s {
		lines = append(lines, fmt.Sprintf("%s %v", k, v))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
