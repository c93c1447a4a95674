package manager

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/csr"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
)

// podAddresses is a PodIPSource that knows one pod, uid-1, with the
// addresses a test gives it.
type podAddresses struct {
	mu     sync.Mutex
	ips    []net.IP
	wanted map[string]string
	err    error
}

func (p *podAddresses) Want(volumeID, podUID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.wanted[volumeID] = podUID
}

func (p *podAddresses) Release(volumeID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.wanted, volumeID)
}

func (p *podAddresses) IPs(_ context.Context, podUID string) ([]net.IP, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return nil, p.err
	}
	if podUID != "uid-1" {
		return nil, nil
	}
	return p.ips, nil
}

// set gives uid-1 the addresses ips.
func (p *podAddresses) set(ips ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ips = nil
	for _, ip := range ips {
		p.ips = append(p.ips, net.ParseIP(ip))
	}
}

func (p *podAddresses) wants() map[string]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]string{}
	for k, v := range p.wanted {
		out[k] = v
	}
	return out
}

var _ PodIPSource = (*podAddresses)(nil)

// recordingRequester signs with signNow and keeps the requests it saw.
type recordingRequester struct {
	*signNow
	mu   sync.Mutex
	seen []*certificatesv1.CertificateSigningRequest
}

func (r *recordingRequester) Request(ctx context.Context, obj *certificatesv1.CertificateSigningRequest) (*csr.Issued, error) {
	r.mu.Lock()
	r.seen = append(r.seen, obj)
	r.mu.Unlock()
	return r.signNow.Request(ctx, obj)
}

// newPodIPsManager returns a manager whose pod uid-1 has no address yet.
func newPodIPsManager(t *testing.T) (*Manager, *storage.Store, *podAddresses, *recordedRenewals, *recordingRequester) {
	t.Helper()
	req := &recordingRequester{signNow: &signNow{}}
	m, store := newManager(t, req.signNow)
	m.requester = req
	pods := &podAddresses{wanted: map[string]string{}}
	m.podIPs = pods
	rec := &recordedRenewals{}
	m.renewals = rec
	return m, store, pods, rec, req
}

func leafIPs(t *testing.T, store *storage.Store, volumeID string) []string {
	t.Helper()
	data, err := store.ReadFile(volumeID, "tls.crt")
	if err != nil {
		t.Fatal(err)
	}
	chain, err := pki.ParseCertificates(data)
	if err != nil {
		t.Fatal(err)
	}
	out := []string{}
	for _, ip := range chain[0].IPAddresses {
		out = append(out, ip.String())
	}
	return out
}

func TestAVolumeAskingForItsPodsAddressGetsItOnceThePodHasOne(t *testing.T) {
	m, store, pods, rec, req := newPodIPsManager(t)
	ctx := context.Background()
	if err := m.Publish(ctx, volume(t, "csi-1", attributes.IPSANs, "${POD_IP}")); err != nil {
		t.Fatal(err)
	}
	if got := pods.wants(); got["csi-1"] != "uid-1" {
		t.Fatalf("wanted pods %v, want uid-1 for csi-1", got)
	}
	// The kubelet publishes before the pod's sandbox, and its address,
	// exist: the first certificate names none, and its request says that
	// the volume will ask for one.
	if got := leafIPs(t, store, "csi-1"); len(got) != 0 {
		t.Errorf("first certificate names %v, want no address", got)
	}
	if got := req.seen[0].Annotations[request.AnnotationPodIPs]; got != request.PodIPsPrimary {
		t.Errorf("first request's %s = %q, want %q", request.AnnotationPodIPs, got, request.PodIPsPrimary)
	}
	refreshAll(t, m)
	if len(rec.renewNow) != 0 {
		t.Fatalf("renewed %v while the pod has no address", rec.renewNow)
	}

	pods.set("10.244.1.5", "fd00::5")
	m.PodChanged("uid-1")
	m.PodChanged("uid-other")
	refreshAll(t, m)
	if !slices.Equal(rec.renewNow, []string{"csi-1"}) {
		t.Fatalf("renewed at once %v, want csi-1 once its pod has an address", rec.renewNow)
	}
	if _, err := m.Renew(ctx, "csi-1"); err != nil {
		t.Fatal(err)
	}
	if got := leafIPs(t, store, "csi-1"); !slices.Equal(got, []string{"10.244.1.5"}) {
		t.Errorf("renewed certificate names %v, want the pod's primary address", got)
	}

	// News of the pod that changes nothing the certificate names.
	m.PodChanged("uid-1")
	refreshAll(t, m)
	if len(rec.renewNow) != 1 {
		t.Errorf("renewed at once %v; the certificate names the pod's address already", rec.renewNow)
	}

	// A pod whose address changes (its sandbox was made again) gets it.
	pods.set("10.244.1.9")
	m.PodChanged("uid-1")
	refreshAll(t, m)
	if len(rec.renewNow) != 2 {
		t.Errorf("renewed at once %v, want again for the pod's new address", rec.renewNow)
	}

	// A pod that loses its addresses is going away: its certificate stays.
	if _, err := m.Renew(ctx, "csi-1"); err != nil {
		t.Fatal(err)
	}
	pods.set()
	m.PodChanged("uid-1")
	refreshAll(t, m)
	if len(rec.renewNow) != 2 {
		t.Errorf("renewed at once %v for a pod without addresses", rec.renewNow)
	}

	if err := m.Unpublish(ctx, "csi-1", filepathOf(t, store, "csi-1")); err != nil {
		t.Fatal(err)
	}
	if got := pods.wants(); len(got) != 0 {
		t.Errorf("wanted pods %v after the unpublish, want none", got)
	}
}

// filepathOf is the target path the volume's state records.
func filepathOf(t *testing.T, store *storage.Store, volumeID string) string {
	t.Helper()
	st, err := store.LoadState(volumeID)
	if err != nil {
		t.Fatal(err)
	}
	return st.TargetPath
}

func TestAPodThatHasItsAddressesAtPublishGetsThemInTheFirstCertificate(t *testing.T) {
	m, store, pods, rec, _ := newPodIPsManager(t)
	pods.set("10.244.1.5", "fd00::5")
	if err := m.Publish(context.Background(), volume(t, "csi-1", attributes.IPSANs, "${POD_IPS}")); err != nil {
		t.Fatal(err)
	}
	if got := leafIPs(t, store, "csi-1"); !slices.Equal(got, []string{"10.244.1.5", "fd00::5"}) {
		t.Errorf("certificate names %v, want both of the pod's addresses", got)
	}
	refreshAll(t, m)
	if len(rec.renewNow) != 0 {
		t.Errorf("renewed at once %v a certificate that names the pod's addresses", rec.renewNow)
	}
}

func TestAVolumeAskingForNoAddressReadsNone(t *testing.T) {
	m, _, pods, _, req := newPodIPsManager(t)
	pods.err = errors.New("must not be asked")
	if err := m.Publish(context.Background(), volume(t, "csi-1", attributes.DNSNames, "web.shop.svc")); err != nil {
		t.Fatal(err)
	}
	if got := pods.wants(); len(got) != 0 {
		t.Errorf("wanted pods %v for a volume that asks for no address", got)
	}
	if _, ok := req.seen[0].Annotations[request.AnnotationPodIPs]; ok {
		t.Error("the request says the volume asks for its pod's addresses")
	}
}

func TestAPublishFailsWhileThePodsAddressesCannotBeLearnt(t *testing.T) {
	m, _, pods, _, _ := newPodIPsManager(t)
	pods.err = errors.New("forbidden: cannot list pods")
	err := m.Publish(context.Background(), volume(t, "csi-1", attributes.IPSANs, "${POD_IP}"))
	if err == nil || !strings.Contains(err.Error(), "learning the addresses of pod shop/web-0: forbidden") {
		t.Fatalf("publish = %v, want the watch's error", err)
	}
	if got := pods.wants(); len(got) != 0 {
		t.Errorf("wanted pods %v after a failed publish, want none", got)
	}
}

func TestAResumedVolumeWantsItsPodsAddressesAgain(t *testing.T) {
	n := newNode(t)
	m, _ := n.driver(t)
	pods := &podAddresses{wanted: map[string]string{}}
	m.podIPs = pods
	req := volume(t, "csi-1", attributes.IPSANs, "${POD_IP}")
	req.TargetPath = filepath.Join(n.pods, "uid-1", "volumes", "kubernetes.io~csi", "tls", "mount")
	if err := os.MkdirAll(filepath.Dir(req.TargetPath), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := m.Publish(context.Background(), req); err != nil {
		t.Fatal(err)
	}

	restarted, _ := n.driver(t)
	after := &podAddresses{wanted: map[string]string{}}
	restarted.podIPs = after
	if err := restarted.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := after.wants(); got["csi-1"] != "uid-1" {
		t.Errorf("wanted pods after the restart %v, want uid-1 for csi-1", got)
	}
}
