package vault

import (
	"fmt"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/certmint/certmint/pkg/issuer"
)

// healthProblem turns what sys/health says of the node at server into
// why it cannot sign, or nil when it can. Vault's own status codes mean:
// 501 not initialised, 503 sealed, 472 a disaster-recovery secondary,
// 429 a standby and 473 a performance standby; the two standbys forward
// what they cannot serve to the active node, so they sign.
func healthProblem(server string, h *vaultapi.HealthResponse) *issuer.NotReadyError {
	switch {
	case !h.Initialized:
		return &issuer.NotReadyError{Reason: ReasonNotInitialized, Message: fmt.Sprintf("Vault at %s is not initialized; initialize and unseal it (vault operator init)", server)}
	case h.Sealed:
		return &issuer.NotReadyError{Reason: ReasonSealed, Message: fmt.Sprintf("Vault at %s is sealed; unseal it (vault operator unseal). Certificates already issued stay valid; new requests wait", server)}
	case h.ReplicationDRMode == "secondary":
		return &issuer.NotReadyError{Reason: ReasonDRSecondary, Message: fmt.Sprintf("Vault at %s is a disaster-recovery secondary, which serves no requests; point spec.vault.server at the primary cluster, or promote this one", server)}
	}
	return nil
}

// healthNote says which kind of node answered, for the Ready message.
func healthNote(h *vaultapi.HealthResponse) string {
	switch {
	case h.PerformanceStandby:
		return " (through a performance standby, which forwards signing to the active node)"
	case h.Standby:
		return " (through a standby, which forwards requests to the active node)"
	}
	return ""
}
