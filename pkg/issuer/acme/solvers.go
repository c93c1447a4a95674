package acme

import (
	"strings"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
)

// The ACME challenge types certmint answers.
const (
	typeHTTP01 = "http-01"
	typeDNS01  = "dns-01"
)

// solverFor is the solver of solvers that proves control of name (a
// wildcard name with its "*."): the one whose selector matches it most
// closely, a listed name before the longest matching zone before no
// selector, the first in the list on a tie. A wildcard name is solved by
// dns01 solvers only, as ACME servers validate wildcards by DNS-01 alone.
func solverFor(solvers []v1alpha1.ACMESolver, name string) (*v1alpha1.ACMESolver, error) {
	wildcard := strings.HasPrefix(name, "*.")
	best, bestScore := -1, -1
	for i := range solvers {
		s := &solvers[i]
		if wildcard && s.DNS01 == nil {
			continue
		}
		score := selectorScore(s.Selector, name)
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	if best < 0 {
		if wildcard {
			return nil, issuer.Permanentf("%s is a wildcard name, which ACME servers validate by DNS-01 only, and no dns01 solver of spec.acme.solvers selects it", name)
		}
		return nil, issuer.Permanentf("no solver of spec.acme.solvers selects %s", name)
	}
	return &solvers[best], nil
}

// selectorScore says how closely sel matches name: -1 not at all, 0 for
// no selector, 1 plus the length of the longest zone it names that holds
// name, and more than any zone for the name itself.
func selectorScore(sel *v1alpha1.ACMESolverSelector, name string) int {
	if sel == nil || (len(sel.DNSNames) == 0 && len(sel.DNSZones) == 0) {
		return 0
	}
	const nameScore = 1 << 16
	score := -1
	for _, n := range sel.DNSNames {
		if strings.EqualFold(strings.TrimSuffix(n, "."), name) {
			return nameScore
		}
	}
	bare := strings.TrimPrefix(name, "*.")
	for _, z := range sel.DNSZones {
		z = strings.ToLower(strings.TrimSuffix(z, "."))
		if bare == z || strings.HasSuffix(bare, "."+z) {
			score = max(score, 1+len(z))
		}
	}
	return score
}

// challengeType is the type of challenge s answers.
func challengeType(s *v1alpha1.ACMESolver) string {
	if s.DNS01 != nil {
		return typeDNS01
	}
	return typeHTTP01
}

// solverNames checks that every name has a solver, before an order is
// made for names some of which could never be validated.
func solverNames(solvers []v1alpha1.ACMESolver, names []string) error {
	for _, n := range names {
		if _, err := solverFor(solvers, n); err != nil {
			return err
		}
	}
	return nil
}
