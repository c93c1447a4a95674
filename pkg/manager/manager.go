// Package manager issues the certificates of the node's volumes: it turns
// volume attributes into a key and a CertificateSigningRequest, waits for
// the certificate, checks it, and has storage write and mount the files.
//
// It knows no gRPC: pkg/csi maps its errors to status codes.
package manager

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/certspec"
	"github.com/certmint/certmint/pkg/csr"
	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/podips"
	"github.com/certmint/certmint/pkg/renewal"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
	"github.com/certmint/certmint/pkg/trust"
)

// Errors callers classify with errors.Is. Invalid attributes come as an
// *attributes.Error.
var (
	// ErrInProgress: another call is working on the same volume.
	ErrInProgress = errors.New("an operation on this volume is already in progress")
	// ErrDenied: the issuer refused the request; the message says why.
	ErrDenied = errors.New("certificate request denied")
)

// Storage is what the manager needs of the node's volume storage.
type Storage interface {
	PrepareVolume(volumeID string) error
	WriteFiles(volumeID string, files map[string]storage.File, gid *int64) error
	ReadFile(volumeID, name string) ([]byte, error)
	Mount(volumeID, target string) error
	IsMounted(target string) (bool, error)
	Unmount(target string) error
	RemoveVolume(volumeID string) error
	SaveState(st *storage.State) error
	LoadState(volumeID string) (*storage.State, error)
	ListVolumes() ([]string, error)
	ListVolumeDirs() ([]string, error)
}

// TrustSource gives the CA certificates written to a volume's CA file: the
// ones relying parties trust for certificates of the issuer.
type TrustSource interface {
	// CABundle returns the issuer's trust bundle, never empty. A miss (an
	// unknown issuer, or one without a bundle) is an error wrapping
	// trust.ErrNoTrustBundle that names the issuer.
	CABundle(ctx context.Context, issuer request.IssuerRef) ([]*x509.Certificate, error)
}

// ReissueSource says which certificates issuers want replaced early.
type ReissueSource interface {
	// ReissueBefore is the issuer's status.reissueBefore: certificates
	// whose request was created before it are to be re-issued. Zero if the
	// issuer asks for none, or is unknown.
	ReissueBefore(issuer request.IssuerRef) time.Time
}

var (
	_ TrustSource   = (*trust.IssuerTrust)(nil)
	_ ReissueSource = (*trust.IssuerTrust)(nil)
)

// PodIPSource gives the addresses of the node's pods whose volumes ask for
// them (${POD_IP}, ${POD_IPS}), which the kubelet does not pass.
type PodIPSource interface {
	// Want has the addresses of pod podUID kept for volumeID, until
	// Release(volumeID).
	Want(volumeID, podUID string)
	Release(volumeID string)
	// IPs returns the addresses of a wanted pod, the primary first; none
	// while it has none. It may wait, until ctx ends, for them to be
	// loaded.
	IPs(ctx context.Context, podUID string) ([]net.IP, error)
}

var _ PodIPSource = (*podips.Watcher)(nil)

// Renewals keeps published volumes' certificates renewed.
type Renewals interface {
	// Schedule (re)schedules the volume's renewal for its new certificate.
	Schedule(volumeID string, c renewal.Certificate)
	// Forget stops renewing the volume, cancelling a renewal in progress.
	Forget(volumeID string)
	// Expedite has the volume renewed early: its issuer asked for its
	// certificate back.
	Expedite(volumeID string)
	// RenewNow has the volume renewed as soon as the node's rate limit
	// allows: its pod's addresses changed.
	RenewNow(volumeID string)
}

var _ Renewals = (*renewal.Scheduler)(nil)

var _ Storage = (*storage.Store)(nil)

// Options configure a Manager.
type Options struct {
	// Storage holds volume files and state. Required.
	Storage Storage
	// Requester gets certificates signed. Required.
	Requester csr.Requester
	// Trust gives each issuer's trust bundle, the volumes' CA file. Required.
	Trust TrustSource
	// Reissue tells which certificates their issuers want replaced early;
	// nil means none are.
	Reissue ReissueSource
	// PodIPs gives the addresses of pods whose volumes ask for them; nil
	// means they are never known, and such volumes get certificates
	// without them.
	PodIPs PodIPSource
	// Events records events on the volumes' pods, for their users; nil
	// records none.
	Events record.EventRecorder
	// GCInterval is how often the volumes whose pods are gone are looked
	// for while the driver runs; zero means DefaultGCInterval.
	GCInterval time.Duration
	// Clock; nil means the real clock.
	Clock clock.WithTicker
	// Logger; zero discards.
	Logger logr.Logger
	// Metrics; nil records nothing.
	Metrics *Metrics
	// Renewals is told of every certificate published and every volume
	// unpublished; nil means certificates are never renewed.
	Renewals Renewals
}

// Manager publishes and unpublishes volumes.
type Manager struct {
	store      Storage
	requester  csr.Requester
	trust      TrustSource
	reissue    ReissueSource
	podIPs     PodIPSource
	events     record.EventRecorder
	gcInterval time.Duration
	clock      clock.WithTicker
	log        logr.Logger
	metrics    *Metrics
	renewals   Renewals
	// refresh holds volumes whose issuer or pod changed, to bring their CA
	// file and renewal in line with them.
	refresh workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	inFlight map[string]bool
	// byIssuer indexes the volumes by issuer, for the issuer's changes.
	byIssuer map[request.IssuerRef]map[string]bool
	// stranded are the volumes found at start whose state cannot be read,
	// with the reason.
	stranded map[string]string
	// volumes are what Volumes reports, by volume ID.
	volumes map[string]*Volume
}

// DefaultGCInterval is how often a running driver looks for volumes whose
// pods are gone. The kubelet unpublishes its volumes before it removes a
// pod's directory, so these are rare: a pod force-removed, a crash.
const DefaultGCInterval = time.Minute

// New returns a Manager.
func New(opts Options) (*Manager, error) {
	switch {
	case opts.Storage == nil:
		return nil, errors.New("manager: Storage is required")
	case opts.Requester == nil:
		return nil, errors.New("manager: Requester is required")
	case opts.Trust == nil:
		return nil, errors.New("manager: Trust is required")
	case opts.GCInterval < 0:
		return nil, fmt.Errorf("manager: GCInterval (%s) must not be negative", opts.GCInterval)
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.GCInterval == 0 {
		opts.GCInterval = DefaultGCInterval
	}
	return &Manager{
		store: opts.Storage, requester: opts.Requester, trust: opts.Trust, reissue: opts.Reissue, podIPs: opts.PodIPs, events: opts.Events,
		gcInterval: opts.GCInterval, clock: opts.Clock, log: opts.Logger, metrics: opts.Metrics, renewals: opts.Renewals,
		refresh: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "certmint-volume-refresh", Clock: opts.Clock}),
		inFlight: map[string]bool{}, byIssuer: map[request.IssuerRef]map[string]bool{}, stranded: map[string]string{},
		volumes: map[string]*Volume{},
	}, nil
}

// PublishRequest is one volume to publish.
type PublishRequest struct {
	VolumeID   string
	TargetPath string
	// Attributes is the volume context, as the kubelet passed it.
	Attributes map[string]string
	// MountGroup is the pod's fsGroup the kubelet delegates to the driver;
	// nil if the pod has none. An fs-group attribute takes precedence.
	MountGroup *int64
}

// lock claims volumeID for one operation; the kubelet may retry a call that
// timed out while the first is still running.
func (m *Manager) lock(volumeID string) (unlock func(), err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inFlight[volumeID] {
		return nil, ErrInProgress
	}
	m.inFlight[volumeID] = true
	return func() {
		m.mu.Lock()
		delete(m.inFlight, volumeID)
		m.mu.Unlock()
	}, nil
}

// Publish issues the volume's certificate, writes its files and mounts them
// read-only at the target path. A volume already mounted there is left as it
// is.
func (m *Manager) Publish(ctx context.Context, req PublishRequest) (err error) {
	spec, err := attributes.Parse(req.Attributes)
	if err != nil {
		return err
	}
	// Deferred before the unlock below, so that it runs after it: the pod
	// rarely has an address yet, and the refresh re-issues the certificate
	// once it has one, however the news and the publish crossed.
	defer func() {
		if err == nil && spec.PodIPs != attributes.NoPodIPs {
			m.refresh.Add(req.VolumeID)
		}
	}()
	unlock, err := m.lock(req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()

	log := m.log.WithValues(logkeys.VolumeID, req.VolumeID, logkeys.PodNamespace, spec.Pod.Namespace,
		logkeys.PodName, spec.Pod.Name, logkeys.Issuer, spec.Certificate.Issuer.String())
	if published, err := m.store.IsMounted(req.TargetPath); err != nil {
		return fmt.Errorf("checking target path: %w", err)
	} else if published {
		log.V(1).Info("Volume already published")
		return nil
	}

	// Indexed before the trust bundle is read, so that a change of the
	// bundle while the request waits reaches this volume too.
	m.track(req.VolumeID, spec)
	if err := m.store.PrepareVolume(req.VolumeID); err != nil {
		m.untrack(req.VolumeID)
		return err
	}
	defer func() {
		// Nothing of a volume that failed to publish may stay behind: the
		// kubelet retries with a fresh call, or gives up without calling
		// NodeUnpublishVolume.
		if err != nil {
			m.untrack(req.VolumeID)
			if cerr := errors.Join(m.store.Unmount(req.TargetPath), m.store.RemoveVolume(req.VolumeID)); cerr != nil {
				log.Error(cerr, "Cleaning up after a failed publish")
			}
		}
	}()

	gid := spec.Volume.FSGroup
	if gid == nil {
		gid = req.MountGroup
	}
	out, err := m.issue(ctx, log, req.VolumeID, spec, gid)
	if err != nil {
		return err
	}
	cert := out.leaf
	st := &storage.State{
		VolumeID:       req.VolumeID,
		TargetPath:     req.TargetPath,
		Attributes:     attributes.Stored(req.Attributes),
		NotBefore:      cert.NotBefore,
		NotAfter:       cert.NotAfter,
		RenewAt:        renewal.Due(cert.NotBefore, cert.NotAfter, spec.Certificate.RenewBefore),
		RequestCreated: out.requestCreated,
	}
	if req.MountGroup != nil {
		st.MountGroup = strconv.FormatInt(*req.MountGroup, 10)
	}
	if err := m.store.SaveState(st); err != nil {
		return err
	}
	if err := m.store.Mount(req.VolumeID, req.TargetPath); err != nil {
		return err
	}
	m.record(st, spec, cert)
	if m.renewals != nil {
		m.renewals.Schedule(req.VolumeID, m.renewalOf(st, spec))
	}
	log.Info("Volume published", logkeys.NotAfter, cert.NotAfter)
	return nil
}

var _ renewal.Renewer = (*Manager)(nil)

// Renew issues a new certificate for a published volume from the attributes
// in its state, swaps its files for the new ones and updates the state. The
// mount stays; pods see the new files at once. On error the volume's files
// are as they were: they are replaced only once the new set is complete and
// checked.
func (m *Manager) Renew(ctx context.Context, volumeID string) (renewal.Certificate, error) {
	unlock, err := m.lock(volumeID)
	if err != nil {
		return renewal.Certificate{}, err
	}
	defer unlock()
	st, err := m.store.LoadState(volumeID)
	if errors.Is(err, os.ErrNotExist) {
		return renewal.Certificate{}, fmt.Errorf("%w: %w", renewal.ErrVolumeGone, err)
	} else if err != nil {
		return renewal.Certificate{}, fmt.Errorf("loading volume state: %w", err)
	}
	spec, err := attributes.Parse(st.Attributes)
	if err != nil {
		return renewal.Certificate{}, fmt.Errorf("parsing stored attributes: %w", err)
	}
	log := m.log.WithValues(logkeys.VolumeID, volumeID, logkeys.PodNamespace, spec.Pod.Namespace,
		logkeys.PodName, spec.Pod.Name, logkeys.Issuer, spec.Certificate.Issuer.String())
	gid, err := groupOf(spec, st)
	if err != nil {
		return renewal.Certificate{}, err
	}
	out, err := m.issue(ctx, log, volumeID, spec, gid)
	if err != nil {
		if ctx.Err() == nil {
			// Kubernetes correlates repeated events, so a renewal failing
			// at every retry shows as one event with a count.
			m.event(spec, corev1.EventTypeWarning, ReasonRenewalFailed,
				"Renewing the certificate of volume %s failed; the current one, valid until %s, stays in place and renewal is retried: %v",
				volumeID, st.NotAfter.UTC().Format(time.RFC3339), err)
		}
		return renewal.Certificate{}, err
	}
	cert := out.leaf
	st.NotBefore, st.NotAfter, st.RequestCreated = cert.NotBefore, cert.NotAfter, out.requestCreated
	st.RenewAt = renewal.Due(cert.NotBefore, cert.NotAfter, spec.Certificate.RenewBefore)
	// The new files are in place already; a state that failed to save only
	// holds the old times, which the scheduler does not read.
	if err := m.store.SaveState(st); err != nil {
		log.Error(err, "Saving the renewed volume's state")
	}
	m.record(st, spec, cert)
	log.Info("Certificate renewed", logkeys.NotAfter, cert.NotAfter)
	return m.renewalOf(st, spec), nil
}

// Reasons of the events on pods.
const (
	ReasonRenewalFailed = "CertificateRenewalFailed"
)

// event records an event on the volume's pod, if events are recorded.
func (m *Manager) event(spec *attributes.Spec, eventType, reason, format string, args ...any) {
	m.eventOn(spec.Pod, eventType, reason, format, args...)
}

func (m *Manager) eventOn(p attributes.Pod, eventType, reason, format string, args ...any) {
	if m.events == nil {
		return
	}
	pod := &corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: p.Namespace, Name: p.Name, UID: types.UID(p.UID)}
	m.events.Eventf(pod, eventType, reason, format, args...)
}

// groupOf is the group the volume's files belong to: the fs-group
// attribute, else the pod's fsGroup as the kubelet passed it, if any.
func groupOf(spec *attributes.Spec, st *storage.State) (*int64, error) {
	if spec.Volume.FSGroup != nil || st.MountGroup == "" {
		return spec.Volume.FSGroup, nil
	}
	g, err := strconv.ParseInt(st.MountGroup, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("parsing stored mount group: %w", err)
	}
	return &g, nil
}

// renewalOf is what the scheduler needs of the volume's current
// certificate.
func (m *Manager) renewalOf(st *storage.State, spec *attributes.Spec) renewal.Certificate {
	return renewal.Certificate{NotBefore: st.NotBefore, NotAfter: st.NotAfter, RenewBefore: spec.Certificate.RenewBefore,
		Reissue: m.outdated(st, spec.Certificate.Issuer)}
}

// outdated reports whether the volume's issuer asked for its certificate
// back: the issuer's reissueBefore is after the certificate's request was
// created. A state that predates recording the request's creation falls
// back to the certificate's NotBefore, which signers set at or before
// signing.
func (m *Manager) outdated(st *storage.State, issuer request.IssuerRef) bool {
	if m.reissue == nil {
		return false
	}
	before := m.reissue.ReissueBefore(issuer)
	if before.IsZero() {
		return false
	}
	created := st.RequestCreated
	if created.IsZero() {
		created = st.NotBefore
	}
	return created.Before(before)
}

// issued is the outcome of an issuance.
type issued struct {
	leaf           *x509.Certificate
	requestCreated time.Time
}

// issue gets a certificate for spec and writes the volume's files.
func (m *Manager) issue(ctx context.Context, log logr.Logger, volumeID string, spec *attributes.Spec, gid *int64) (*issued, error) {
	start := m.clock.Now()
	// An issuer without a trust bundle is unknown or not Ready yet: asking
	// it for a certificate would only wait until the kubelet gives up.
	if _, err := m.trust.CABundle(ctx, spec.Certificate.Issuer); err != nil {
		return nil, err
	}
	cert, err := m.certificate(ctx, spec)
	if err != nil {
		return nil, err
	}
	key, err := m.privateKey(volumeID, spec)
	if err != nil {
		return nil, err
	}
	csrObj, err := buildCSR(volumeID, spec, &cert, key)
	if err != nil {
		return nil, err
	}
	requested := m.clock.Now()
	out, err := m.requester.Request(ctx, csrObj)
	m.metrics.observeIssuance(err, m.clock.Since(requested))
	if err != nil {
		var denied *csr.DeniedError
		var failed *csr.FailedError
		switch {
		case errors.As(err, &denied):
			return nil, fmt.Errorf("%w by %s (CertificateSigningRequest %s): %s", ErrDenied, spec.Certificate.Issuer, denied.Name, denied.Detail())
		case errors.As(err, &failed):
			return nil, fmt.Errorf("%s failed to sign (CertificateSigningRequest %s): %s", spec.Certificate.Issuer, failed.Name, failed.Detail())
		}
		return nil, err
	}
	chain, err := pki.ParseCertificates(out.Chain)
	if err != nil {
		return nil, fmt.Errorf("the chain %s issued: %w", spec.Certificate.Issuer, err)
	}
	if err := cert.Verify(key.Public(), chain, m.clock.Now()); err != nil {
		return nil, fmt.Errorf("the certificate issued by %s does not match the request: %w", spec.Certificate.Issuer, err)
	}
	// Read again: the bundle may have changed while the request waited, and
	// the certificate must verify against the one the pod gets.
	ca, err := m.trust.CABundle(ctx, spec.Certificate.Issuer)
	if err != nil {
		return nil, err
	}
	if err := certspec.VerifyTrusted(chain, ca, m.clock.Now()); err != nil {
		return nil, fmt.Errorf("the certificate issued by %s does not verify against its trust bundle: %w", spec.Certificate.Issuer, err)
	}
	files, err := m.files(spec, key, chain, ca, gid != nil)
	if err != nil {
		return nil, err
	}
	if err := m.store.WriteFiles(volumeID, files, gid); err != nil {
		return nil, err
	}
	log.V(1).Info("Certificate issued", logkeys.Duration, m.clock.Since(start).String())
	return &issued{leaf: chain[0], requestCreated: out.Created}, nil
}

// certificate is what to ask for for the volume now: what its attributes
// say, with its pod's current addresses if it asks for them.
func (m *Manager) certificate(ctx context.Context, spec *attributes.Spec) (certspec.Spec, error) {
	if spec.PodIPs == attributes.NoPodIPs || m.podIPs == nil {
		return spec.CertificateFor(nil), nil
	}
	ips, err := m.podIPs.IPs(ctx, spec.Pod.UID)
	if err != nil {
		return certspec.Spec{}, fmt.Errorf("learning the addresses of pod %s/%s: %w", spec.Pod.Namespace, spec.Pod.Name, err)
	}
	return spec.CertificateFor(ips), nil
}

// privateKey returns the volume's key: the one it has if reuse-private-key
// is set and that key still fits the attributes, else a new one.
func (m *Manager) privateKey(volumeID string, spec *attributes.Spec) (crypto.Signer, error) {
	if spec.Certificate.Key.Reuse {
		if data, err := m.store.ReadFile(volumeID, spec.Volume.Files.PrivateKey); err == nil {
			if key, err := pki.ParsePrivateKey(data); err == nil {
				if alg, size, err := keystore.Describe(key.Public()); err == nil && alg == spec.Certificate.Key.Algorithm && size == spec.Certificate.Key.Size {
					return key, nil
				}
			}
		}
	}
	key, err := keystore.Generate(spec.Certificate.Key.Algorithm, spec.Certificate.Key.Size)
	if err != nil {
		return nil, fmt.Errorf("generating private key: %w", err)
	}
	return key, nil
}

// buildCSR makes the CertificateSigningRequest object for cert, the
// volume's certificate as spec asks for it now, signed with key. Labels and
// annotations name the pod and volume for the controller, which checks them
// against what the API server stamps on the request.
func buildCSR(volumeID string, spec *attributes.Spec, cert *certspec.Spec, key crypto.Signer) (*certificatesv1.CertificateSigningRequest, error) {
	der, err := cert.CertificateRequest(key)
	if err != nil {
		return nil, err
	}
	seconds := int32(cert.Duration / time.Second)
	annotations := map[string]string{
		request.AnnotationPodName:      spec.Pod.Name,
		request.AnnotationPodNamespace: spec.Pod.Namespace,
		request.AnnotationVolumeID:     volumeID,
	}
	if a := spec.PodIPs.Annotation(); a != "" {
		annotations[request.AnnotationPodIPs] = a
	}
	return &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{
			Labels:      map[string]string{request.LabelPodUID: spec.Pod.UID},
			Annotations: annotations,
		},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           pki.EncodeCertificateRequest(der),
			SignerName:        cert.Issuer.SignerName(),
			ExpirationSeconds: &seconds,
			Usages:            cert.Usages,
		},
	}, nil
}

// files encodes the volume's file set. Files are 0440 when a group shares
// them with the pod, else 0400.
func (m *Manager) files(spec *attributes.Spec, key crypto.Signer, chain, ca []*x509.Certificate, shared bool) (map[string]storage.File, error) {
	mode := storageModeOwner
	if shared {
		mode = storageModeGroup
	}
	keyPEM, err := keystore.EncodePrivateKey(key, spec.Volume.KeyEncoding)
	if err != nil {
		return nil, err
	}
	files := map[string]storage.File{
		spec.Volume.Files.Certificate: {Data: pki.EncodeCertificates(chain...), Mode: mode},
		spec.Volume.Files.PrivateKey:  {Data: keyPEM, Mode: mode},
		spec.Volume.Files.CA:          {Data: pki.EncodeCertificates(ca...), Mode: mode},
	}
	if spec.Volume.PKCS12 != nil {
		data, err := keystore.PKCS12(key, chain, ca, spec.Volume.PKCS12.Password)
		if err != nil {
			return nil, err
		}
		files[spec.Volume.PKCS12.Filename] = storage.File{Data: data, Mode: mode}
	}
	if spec.Volume.JKS != nil {
		data, err := keystore.JKS(key, chain, ca, spec.Volume.JKS.Password, m.clock.Now())
		if err != nil {
			return nil, err
		}
		files[spec.Volume.JKS.Filename] = storage.File{Data: data, Mode: mode}
	}
	return files, nil
}

const (
	storageModeOwner os.FileMode = 0o400
	storageModeGroup os.FileMode = 0o440
)

// Unpublish unmounts the target path and removes everything of the volume.
// Unpublishing a volume that is gone is not an error.
func (m *Manager) Unpublish(ctx context.Context, volumeID, targetPath string) error {
	// First, so that a renewal in progress is cancelled and lets go of the
	// volume; were this call to fail, the kubelet retries it.
	if m.renewals != nil {
		m.renewals.Forget(volumeID)
	}
	unlock, err := m.lock(volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.store.Unmount(targetPath); err != nil {
		return err
	}
	if err := m.store.RemoveVolume(volumeID); err != nil {
		return err
	}
	m.untrack(volumeID)
	m.unstrand(volumeID)
	m.log.Info("Volume unpublished", logkeys.VolumeID, volumeID)
	return nil
}
