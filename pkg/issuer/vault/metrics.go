package vault

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Logins and renewals show whether tokens are kept: a count of logins
// that grows with the signatures means every signature logs in, and
// Vault's auth leases pile up.
var (
	logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "certmint",
		Subsystem: "vault",
		Name:      "logins_total",
		Help:      "Logins to Vault, by signer name and auth method (approle, kubernetes).",
	}, []string{"signer", "method"})

	renewals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "certmint",
		Subsystem: "vault",
		Name:      "token_renewals_total",
		Help:      "Renewals of Vault tokens, by signer name.",
	}, []string{"signer"})
)

func init() {
	ctrlmetrics.Registry.MustRegister(logins, renewals)
}
