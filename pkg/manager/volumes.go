package manager

import (
	"cmp"
	"crypto/x509"
	"slices"
	"time"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
)

// Volume is what the driver holds for one volume, as those who look at it
// from outside (the driver's /volumes and its per-volume metrics) see it.
// It holds no key and no token.
type Volume struct {
	ID         string
	TargetPath string
	Pod        attributes.Pod
	// Issuer is zero for a stranded volume, whose attributes the driver
	// refuses.
	Issuer request.IssuerRef
	// Certificate is the leaf the volume's files hold now; nil for a
	// stranded volume.
	Certificate *x509.Certificate
	// NotBefore and NotAfter bound the current certificate, and RenewAt is
	// when it is due for renewal, as the volume's state records them. The
	// renewal starts at RenewAt or a little before, never later, unless it
	// fails or the node's rate limit holds it back. Zero when the state
	// cannot be read.
	NotBefore, NotAfter, RenewAt time.Time
	// Stranded says why the driver does not renew the volume (see
	// Problems); empty when it does.
	Stranded string
}

// Volumes returns the volumes the driver serves, published or resumed, and
// the stranded ones, ordered by ID. A volume is here from the moment its
// publish succeeds until it is unpublished or collected.
func (m *Manager) Volumes() []Volume {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Volume, 0, len(m.volumes))
	for _, v := range m.volumes {
		out = append(out, *v)
	}
	slices.SortFunc(out, func(a, b Volume) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// record keeps what Volumes reports of a volume the driver serves, with
// the current certificate leaf if it is known.
func (m *Manager) record(st *storage.State, spec *attributes.Spec, leaf *x509.Certificate) {
	v := &Volume{
		ID: st.VolumeID, TargetPath: st.TargetPath, Pod: spec.Pod, Issuer: spec.Certificate.Issuer, Certificate: leaf,
		NotBefore: st.NotBefore, NotAfter: st.NotAfter, RenewAt: st.RenewAt,
	}
	m.mu.Lock()
	m.volumes[st.VolumeID] = v
	m.mu.Unlock()
}

// recordStranded keeps what Volumes reports of a volume the driver does not
// renew: what its state, st if any of it could be read, still says.
func (m *Manager) recordStranded(volumeID string, st *storage.State, reason string) {
	v := &Volume{ID: volumeID, Stranded: reason}
	if st != nil {
		v.TargetPath, v.NotBefore, v.NotAfter, v.RenewAt = st.TargetPath, st.NotBefore, st.NotAfter, st.RenewAt
		v.Pod = attributes.Pod{
			Name:      st.Attributes[attributes.PodNameKey],
			Namespace: st.Attributes[attributes.PodNamespaceKey],
			UID:       st.Attributes[attributes.PodUIDKey],
		}
	}
	m.mu.Lock()
	m.volumes[volumeID] = v
	m.mu.Unlock()
}

// currentLeaf reads the leaf of the volume's certificate file; nil if it
// cannot be read, which only leaves it out of Volumes.
func (m *Manager) currentLeaf(volumeID string, spec *attributes.Spec) *x509.Certificate {
	data, err := m.store.ReadFile(volumeID, spec.Volume.Files.Certificate)
	if err != nil {
		return nil
	}
	chain, err := pki.ParseCertificates(data)
	if err != nil {
		return nil
	}
	return chain[0]
}
