package manager

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/certspec"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
)

// track indexes volumeID under its issuer, and has its pod's addresses
// kept if it asks for them.
func (m *Manager) track(volumeID string, spec *attributes.Spec) {
	m.mu.Lock()
	issuer := spec.Certificate.Issuer
	if m.byIssuer[issuer] == nil {
		m.byIssuer[issuer] = map[string]bool{}
	}
	m.byIssuer[issuer][volumeID] = true
	m.mu.Unlock()
	if spec.PodIPs != attributes.NoPodIPs && m.podIPs != nil {
		m.podIPs.Want(volumeID, spec.Pod.UID)
	}
}

// untrack removes volumeID from the index and from Volumes, and lets go of
// its pod's addresses.
func (m *Manager) untrack(volumeID string) {
	m.mu.Lock()
	delete(m.volumes, volumeID)
	for issuer, volumes := range m.byIssuer {
		delete(volumes, volumeID)
		if len(volumes) == 0 {
			delete(m.byIssuer, issuer)
		}
	}
	m.mu.Unlock()
	if m.podIPs != nil {
		m.podIPs.Release(volumeID)
	}
}

// PodChanged brings every volume of the pod whose UID is podUID in line
// with the pod's addresses, soon and in the background: a volume that asks
// for them and whose certificate does not name them is renewed at once. It
// does not block; call it from the watch on the node's pods.
func (m *Manager) PodChanged(podUID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id, v := range m.volumes {
		if v.Pod.UID == podUID {
			m.refresh.Add(id)
		}
	}
}

// IssuerChanged brings every volume of the issuer in line with it, soon
// and in the background: their CA files get the issuer's current trust
// bundle, and those whose certificate the issuer wants back (its
// reissueBefore) are renewed early. It does not block; call it from the
// issuers' watch.
func (m *Manager) IssuerChanged(issuer request.IssuerRef) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for id := range m.byIssuer[issuer] {
		m.refresh.Add(id)
	}
}

// Run refreshes the volumes of changed issuers and removes volumes whose
// pods are gone, until ctx ends.
func (m *Manager) Run(ctx context.Context) {
	var wg sync.WaitGroup
	wg.Go(func() {
		<-ctx.Done()
		m.refresh.ShutDown()
	})
	wg.Go(func() {
		for m.refreshNext(ctx) {
		}
	})
	wg.Go(func() {
		ticker := m.clock.NewTicker(m.gcInterval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C():
				m.CollectGarbage(ctx)
			}
		}
	})
	wg.Wait()
}

// maxRefreshRetries bounds the retries of a volume's refresh that fails
// for another reason than a call in progress; with the queue's backoff they
// span under a minute.
const maxRefreshRetries = 10

// busyRetryDelay is how soon a volume busy with a publish or renewal is
// looked at again. Those can take as long as the issuer takes to sign, so
// the wait does not grow and does not count as a failed attempt.
const busyRetryDelay = time.Second

// refreshNext refreshes one volume off the queue; false once the queue is
// shut down.
func (m *Manager) refreshNext(ctx context.Context) bool {
	id, shutdown := m.refresh.Get()
	if shutdown {
		return false
	}
	defer m.refresh.Done(id)
	switch err := m.refreshVolume(ctx, id); {
	case errors.Is(err, ErrInProgress):
		// A publish or renewal holds the volume; it may have read the old
		// bundle. Look again once it is done. Not through the rate limiter,
		// whose count of requeues would use up the retries of a real
		// failure later.
		m.refresh.AddAfter(id, busyRetryDelay)
	case err != nil && m.refresh.NumRequeues(id) < maxRefreshRetries:
		m.log.Error(err, "Bringing a volume in line with its issuer and pod; retrying", logkeys.VolumeID, id)
		m.refresh.AddRateLimited(id)
	case err != nil:
		// Something a retry does not mend, such as a volume whose files
		// are gone; the issuer's next change tries again.
		m.log.Error(err, "Bringing a volume in line with its issuer and pod; giving up", logkeys.VolumeID, id)
		m.refresh.Forget(id)
	default:
		m.refresh.Forget(id)
	}
	return true
}

// refreshVolume writes the issuer's current trust bundle into the volume's
// CA file if it differs, has the volume renewed early if the issuer wants
// its certificate back or no longer trusts it, and at once if its pod has
// addresses the certificate should name and does not.
func (m *Manager) refreshVolume(ctx context.Context, volumeID string) error {
	unlock, err := m.lock(volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	st, err := m.store.LoadState(volumeID)
	if errors.Is(err, os.ErrNotExist) {
		// Unpublished, or a publish that failed.
		return nil
	} else if err != nil {
		return fmt.Errorf("loading volume state: %w", err)
	}
	spec, err := attributes.Parse(st.Attributes)
	if err != nil {
		return fmt.Errorf("parsing stored attributes: %w", err)
	}
	log := m.log.WithValues(logkeys.VolumeID, volumeID, logkeys.PodNamespace, spec.Pod.Namespace,
		logkeys.PodName, spec.Pod.Name, logkeys.Issuer, spec.Certificate.Issuer.String())
	expedite := false
	ca, err := m.trust.CABundle(ctx, spec.Certificate.Issuer)
	if err != nil {
		// The issuer is gone or has withdrawn its bundle: the pod keeps the
		// last one it had, as it keeps its certificate.
		log.Error(err, "Keeping the volume's CA file as it is")
	} else {
		untrusted, err := m.rewriteCA(log, volumeID, spec, st, ca)
		if err != nil {
			return err
		}
		expedite = untrusted
	}
	if m.renewals != nil && m.outdated(st, spec.Certificate.Issuer) {
		log.Info("The issuer asked for the volume's certificate to be re-issued early", logkeys.NotAfter, st.NotAfter)
		expedite = true
	}
	if expedite && m.renewals != nil {
		m.renewals.Expedite(volumeID)
	}
	if spec.PodIPs != attributes.NoPodIPs && m.renewals != nil {
		stale, err := m.podIPsChanged(ctx, volumeID, spec)
		if err != nil {
			return err
		}
		if stale {
			log.Info("The pod's addresses are not those its certificate names: re-issuing it")
			m.renewals.RenewNow(volumeID)
		}
	}
	return nil
}

// podIPsChanged reports whether the volume's certificate should name other
// addresses of its pod than it does: the pod has addresses, and they are
// not the ones named. A pod that has none (yet, or any more) leaves the
// certificate as it is: the first is issued before the pod has an address,
// and a pod that loses its addresses is going away.
func (m *Manager) podIPsChanged(ctx context.Context, volumeID string, spec *attributes.Spec) (bool, error) {
	if m.podIPs == nil {
		return false, nil
	}
	ips, err := m.podIPs.IPs(ctx, spec.Pod.UID)
	if err != nil || len(ips) == 0 {
		return false, err
	}
	leaf := m.currentLeaf(volumeID, spec)
	if leaf == nil {
		return false, errors.New("the volume's certificate cannot be read to compare its addresses with the pod's")
	}
	want := spec.CertificateFor(ips).IPAddresses
	return len(leaf.IPAddresses) != len(want) || slices.ContainsFunc(want, func(ip net.IP) bool {
		return !slices.ContainsFunc(leaf.IPAddresses, ip.Equal)
	}), nil
}

// rewriteCA replaces the volume's file set with one whose CA file (and
// keystores, which hold the CA too) is the issuer's bundle ca, if the
// current one differs. Key and chain stay as they are; all files change
// together.
//
// A bundle that does not verify the volume's certificate (the issuer was
// deleted and created again with a new root, or now signs with another CA
// without a rotation) would leave the pod rejected by its peers and
// rejecting them until every certificate is re-issued. The CA file then
// keeps, after the bundle, the certificates of the current one that verify
// the volume's certificate, so the pod trusts peers of the old and of the
// new CA; untrusted tells the caller to have the volume re-issued, which
// writes the issuer's bundle alone.
func (m *Manager) rewriteCA(log logr.Logger, volumeID string, spec *attributes.Spec, st *storage.State, ca []*x509.Certificate) (untrusted bool, err error) {
	chainPEM, err := m.store.ReadFile(volumeID, spec.Volume.Files.Certificate)
	if err != nil {
		return false, fmt.Errorf("reading the volume's certificate: %w", err)
	}
	chain, err := pki.ParseCertificates(chainPEM)
	if err != nil {
		return false, fmt.Errorf("the volume's certificate: %w", err)
	}
	currentPEM, err := m.store.ReadFile(volumeID, spec.Volume.Files.CA)
	if err != nil {
		return false, fmt.Errorf("reading the volume's CA file: %w", err)
	}
	at := trustTime(chain[0], m.clock.Now())
	if verr := certspec.VerifyTrusted(chain, ca, at); verr != nil {
		untrusted = true
		// A CA file that no longer parses has nothing worth keeping, and
		// neither does one whose certificate has expired: old CAs stay only
		// while a valid certificate still needs them, so a CA the issuer
		// dropped is not trusted for ever when re-issuing keeps failing.
		current, _ := pki.ParseCertificates(currentPEM)
		if m.clock.Now().After(chain[0].NotAfter) {
			current = nil
		}
		var kept []*x509.Certificate
		for _, c := range current {
			if certspec.VerifyTrusted(chain, []*x509.Certificate{c}, at) == nil {
				kept = append(kept, c)
			}
		}
		log.Info("The issuer's trust bundle does not verify the volume's certificate: re-issuing it early, and keeping the CA certificates that verify it in the CA file until then",
			logkeys.Reason, verr.Error(), logkeys.KeptCACertificates, len(kept))
		ca = slices.Concat(ca, kept)
	}
	caPEM := pki.EncodeCertificates(ca...)
	if bytes.Equal(currentPEM, caPEM) {
		return untrusted, nil
	}
	keyPEM, err := m.store.ReadFile(volumeID, spec.Volume.Files.PrivateKey)
	if err != nil {
		return untrusted, fmt.Errorf("reading the volume's key: %w", err)
	}
	key, err := pki.ParsePrivateKey(keyPEM)
	if err != nil {
		return untrusted, fmt.Errorf("decoding the volume's key: %w", err)
	}
	gid, err := groupOf(spec, st)
	if err != nil {
		return untrusted, err
	}
	files, err := m.files(spec, key, chain, ca, gid != nil)
	if err != nil {
		return untrusted, err
	}
	if err := m.store.WriteFiles(volumeID, files, gid); err != nil {
		return untrusted, err
	}
	log.Info("Wrote the issuer's new trust bundle into the volume")
	return untrusted, nil
}

// trustTime is when to check whether a bundle verifies leaf: now, or the
// nearest time leaf is valid. The question is which CA it chains to; an
// expired certificate is being renewed anyway, and its CA certificates may
// still be what its peers chain to.
func trustTime(leaf *x509.Certificate, now time.Time) time.Time {
	switch {
	case now.Before(leaf.NotBefore):
		return leaf.NotBefore
	case now.After(leaf.NotAfter):
		return leaf.NotAfter
	}
	return now
}

// CollectGarbage removes the volumes whose pods are gone: not mounted any
// more, and the pod's directory removed. The kubelet unpublishes volumes
// before it removes a pod's directory, but not always (a pod force-removed,
// a kubelet that crashed), and never while the driver is down.
func (m *Manager) CollectGarbage(ctx context.Context) {
	ids, err := m.store.ListVolumes()
	if err != nil {
		m.log.Error(err, "Looking for volumes whose pods are gone")
		return
	}
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		st, err := m.store.LoadState(id)
		if err != nil || st.TargetPath == "" {
			// Resume logged it; a person has to look at it.
			continue
		}
		if gone, err := m.podGone(st); err != nil || !gone {
			continue
		}
		if err := m.Unpublish(ctx, id, st.TargetPath); err != nil {
			if !errors.Is(err, ErrInProgress) {
				m.log.Error(err, "Removing a volume whose pod is gone", logkeys.VolumeID, id)
			}
			continue
		}
		m.log.Info("Removed a volume whose pod is gone", logkeys.VolumeID, id, logkeys.TargetPath, st.TargetPath)
	}
}

// podGone reports whether the volume's target is not mounted and its pod's
// directory is gone.
func (m *Manager) podGone(st *storage.State) (bool, error) {
	published, err := m.store.IsMounted(st.TargetPath)
	if err != nil || published {
		return false, err
	}
	return !exists(podDir(st.TargetPath, st.Attributes[attributes.PodUIDKey])), nil
}
