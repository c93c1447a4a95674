package acme

import (
	"strings"
	"testing"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
)

func TestSolverForPicksTheClosestSelector(t *testing.T) {
	http := func(sel *v1alpha1.ACMESolverSelector) v1alpha1.ACMESolver {
		return v1alpha1.ACMESolver{Selector: sel, HTTP01: &v1alpha1.ACMEHTTP01Solver{}}
	}
	dns := func(sel *v1alpha1.ACMESolverSelector) v1alpha1.ACMESolver {
		return v1alpha1.ACMESolver{Selector: sel, DNS01: &v1alpha1.ACMEDNS01Solver{}}
	}
	solvers := []v1alpha1.ACMESolver{
		http(nil), // 0: anything else
		dns(&v1alpha1.ACMESolverSelector{DNSZones: []string{"example.test"}}),                                  // 1
		dns(&v1alpha1.ACMESolverSelector{DNSZones: []string{"internal.example.test."}}),                        // 2
		http(&v1alpha1.ACMESolverSelector{DNSNames: []string{"www.internal.example.test"}}),                    // 3
		dns(&v1alpha1.ACMESolverSelector{DNSZones: []string{"example.test"}}),                                  // 4: a tie with 1
		http(&v1alpha1.ACMESolverSelector{DNSNames: []string{"*.apps.example.test"}, DNSZones: []string{"x"}}), // 5
	}
	for _, c := range []struct {
		name string
		want int
	}{
		{"other.org", 0},
		{"example.test", 1},
		{"web.example.test", 1},
		{"notexample.test", 0},
		{"api.internal.example.test", 2},
		{"www.internal.example.test", 3},
		{"*.example.test", 1},
		{"*.internal.example.test", 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := solverFor(solvers, c.name)
			if err != nil {
				t.Fatal(err)
			}
			if got != &solvers[c.want] {
				for i := range solvers {
					if got == &solvers[i] {
						t.Fatalf("solver %d, want %d", i, c.want)
					}
				}
			}
		})
	}
	t.Run("a wildcard name a solver of another type lists needs a dns01 solver", func(t *testing.T) {
		_, err := solverFor([]v1alpha1.ACMESolver{solvers[5]}, "*.apps.example.test")
		if err == nil || !strings.Contains(err.Error(), "DNS-01 only") {
			t.Errorf("err = %v, want one saying wildcards need DNS-01", err)
		}
	})
	t.Run("a name no selector matches has no solver", func(t *testing.T) {
		if _, err := solverFor(solvers[1:3], "other.org"); err == nil || !strings.Contains(err.Error(), "no solver") {
			t.Errorf("err = %v", err)
		}
	})
}
