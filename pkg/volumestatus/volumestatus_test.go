package volumestatus

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/certmint/certmint/internal/metricstest"
	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/manager"
	"github.com/certmint/certmint/pkg/pki/pkitest"
	"github.com/certmint/certmint/pkg/renewal"
	"github.com/certmint/certmint/pkg/request"
)

// fakeVolumes and fakeRenewals stand in for the manager and the scheduler.
type fakeVolumes []manager.Volume

func (f fakeVolumes) Volumes() []manager.Volume { return slices.Clone(f) }

type fakeRenewals map[string]renewal.Status

func (f fakeRenewals) Status(volumeID string) (renewal.Status, bool) {
	st, ok := f[volumeID]
	return st, ok
}

var (
	t0        = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	shopCA    = request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}
	meshCA    = request.IssuerRef{Kind: request.KindClusterIssuer, Name: "mesh"}
	webTarget = "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/tls/mount"
)

// webLeaf is a certificate with a name of every kind.
func webLeaf(t *testing.T) *x509.Certificate {
	t.Helper()
	ca, caKey := pkitest.CA(t, "test CA")
	spiffe, err := url.Parse("spiffe://cluster.local/ns/shop/sa/web")
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := pkitest.Sign(t, &x509.Certificate{
		SerialNumber:   big.NewInt(0x0abc12),
		Subject:        pkix.Name{CommonName: "web-0.shop.svc", Organization: []string{"shop"}},
		DNSNames:       []string{"web-0.shop.svc", "web.shop.svc"},
		IPAddresses:    []net.IP{net.ParseIP("10.1.2.3"), net.ParseIP("fd00::1")},
		URIs:           []*url.URL{spiffe},
		EmailAddresses: []string{"web@shop.example"},
		NotBefore:      t0,
		NotAfter:       t0.Add(24 * time.Hour),
	}, ca, caKey)
	return leaf
}

func get(t *testing.T, r *Reporter, target string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec.Code, rec.Body.String()
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal([]byte(a), &va); err != nil {
		t.Fatalf("%v in %s", err, a)
	}
	if err := json.Unmarshal([]byte(b), &vb); err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	return reflect.DeepEqual(va, vb)
}

func TestVolumesListsEachVolumeWithItsCertificateAndRenewal(t *testing.T) {
	vols := fakeVolumes{{
		ID: "csi-1", TargetPath: webTarget, Pod: attributes.Pod{Namespace: "shop", Name: "web-0", UID: "uid-1", ServiceAccountName: "web"},
		Issuer: shopCA, Certificate: webLeaf(t),
		NotBefore: t0, NotAfter: t0.Add(24 * time.Hour), RenewAt: t0.Add(16 * time.Hour),
	}}
	renewals := fakeRenewals{"csi-1": {Next: t0.Add(17 * time.Hour), Failures: 2,
		LastError: errors.New("Issuer shop/ca failed to sign (CertificateSigningRequest csr-1): the CA is offline"), LastFailure: t0.Add(16*time.Hour + time.Minute)}}
	r, err := New(Options{Volumes: vols, Renewals: renewals, NodeName: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	code, body := get(t, r, "/volumes")
	if code != http.StatusOK {
		t.Fatalf("GET /volumes = %d %s", code, body)
	}
	// The shape docs/driver.md documents.
	want := `{
	  "node": "node-a",
	  "volumes": [{
	    "namespace": "shop",
	    "pod": "web-0",
	    "podUID": "uid-1",
	    "volume": {"id": "csi-1", "name": "tls", "targetPath": "/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/tls/mount"},
	    "issuer": {"kind": "Issuer", "namespace": "shop", "name": "ca"},
	    "certificate": {
	      "subject": "CN=web-0.shop.svc,O=shop",
	      "dnsNames": ["web-0.shop.svc", "web.shop.svc"],
	      "ipAddresses": ["10.1.2.3", "fd00::1"],
	      "uris": ["spiffe://cluster.local/ns/shop/sa/web"],
	      "emailAddresses": ["web@shop.example"],
	      "serialNumber": "abc12",
	      "notBefore": "2030-01-02T03:04:05Z",
	      "notAfter": "2030-01-03T03:04:05Z"
	    },
	    "renewalTime": "2030-01-02T19:04:05Z",
	    "nextRenewalAttempt": "2030-01-02T20:04:05Z",
	    "lastRenewalError": {
	      "message": "Issuer shop/ca failed to sign (CertificateSigningRequest csr-1): the CA is offline",
	      "time": "2030-01-02T19:05:05Z",
	      "failuresInARow": 2
	    }
	  }]
	}`
	if !sameJSON(t, body, want) {
		t.Errorf("GET /volumes =\n%s\nwant\n%s", body, want)
	}
}

func TestAVolumeBeingRenewedOrStrandedSaysSo(t *testing.T) {
	vols := fakeVolumes{
		{ID: "csi-1", TargetPath: webTarget, Pod: attributes.Pod{Namespace: "shop", Name: "web-0", UID: "uid-1"},
			Issuer: meshCA, Certificate: webLeaf(t), NotBefore: t0, NotAfter: t0.Add(24 * time.Hour), RenewAt: t0.Add(16 * time.Hour)},
		{ID: "csi-2", TargetPath: "/elsewhere/target", Pod: attributes.Pod{Namespace: "shop", Name: "web-1", UID: "uid-2"},
			NotBefore: t0, NotAfter: t0.Add(24 * time.Hour), RenewAt: t0.Add(16 * time.Hour), Stranded: "its attributes are refused"},
		{ID: "csi-3", Stranded: "its state does not parse"},
	}
	r, err := New(Options{Volumes: vols, Renewals: fakeRenewals{"csi-1": {Renewing: true}}, NodeName: "node-a"})
	if err != nil {
		t.Fatal(err)
	}
	_, body := get(t, r, "/volumes")
	var list List
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Volumes) != 3 {
		t.Fatalf("volumes %+v, want three", list.Volumes)
	}
	// Ordered by namespace and pod: the unreadable state, with neither, first.
	unreadable, renewing, refused := list.Volumes[0], list.Volumes[1], list.Volumes[2]
	if !renewing.Renewing || renewing.NextRenewalAttempt != nil || renewing.Issuer == nil || *renewing.Issuer != (Issuer{Kind: "ClusterIssuer", Name: "mesh"}) {
		t.Errorf("a volume being renewed: %+v, want renewing, no next attempt, ClusterIssuer mesh", renewing)
	}
	if refused.Stranded == "" || refused.Issuer != nil || refused.Volume.Name != "" || refused.Certificate == nil ||
		refused.Certificate.SerialNumber != "" || !refused.Certificate.NotAfter.Equal(t0.Add(24*time.Hour)) || refused.RenewalTime == nil {
		t.Errorf("a volume whose attributes are refused: %+v, want why, its validity and renewal time, no issuer, serial or volume name", refused)
	}
	if unreadable.Volume.ID != "csi-3" || unreadable.Stranded == "" || unreadable.Certificate != nil || unreadable.RenewalTime != nil {
		t.Errorf("a volume whose state does not parse: %+v, want its ID and why only", unreadable)
	}
}

func TestVolumesFiltersByNamespaceAndPodAndRefusesUnknownParameters(t *testing.T) {
	vols := fakeVolumes{
		{ID: "csi-1", Pod: attributes.Pod{Namespace: "shop", Name: "web-0"}},
		{ID: "csi-2", Pod: attributes.Pod{Namespace: "shop", Name: "web-1"}},
		{ID: "csi-3", Pod: attributes.Pod{Namespace: "bank", Name: "web-0"}},
	}
	r, err := New(Options{Volumes: vols})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"", []string{"csi-3", "csi-1", "csi-2"}},
		{"?namespace=shop", []string{"csi-1", "csi-2"}},
		{"?pod=web-0", []string{"csi-3", "csi-1"}},
		{"?namespace=shop&pod=web-0", []string{"csi-1"}},
		{"?namespace=none", []string{}},
		// An empty value asks for volumes whose field is empty: none.
		{"?pod=", []string{}},
	} {
		code, body := get(t, r, "/volumes"+c.query)
		var list List
		if err := json.Unmarshal([]byte(body), &list); code != http.StatusOK || err != nil {
			t.Fatalf("GET /volumes%s = %d %s", c.query, code, body)
		}
		got := []string{}
		for _, v := range list.Volumes {
			got = append(got, v.Volume.ID)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("GET /volumes%s lists %v, want %v", c.query, got, c.want)
		}
	}
	if code, body := get(t, r, "/volumes?ns=shop&Pod=web-0"); code != http.StatusBadRequest || !strings.Contains(body, "Pod, ns") {
		t.Errorf("GET /volumes?ns=shop&Pod=web-0 = %d %q, want 400 naming both", code, body)
	}
}

func TestNewRequiresVolumes(t *testing.T) {
	if _, err := New(Options{}); err == nil {
		t.Error("New without Volumes succeeded")
	}
}

func TestVolumeNameComesFromTheKubeletsLayout(t *testing.T) {
	for target, want := range map[string]string{
		webTarget: "tls",
		"/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/certs/mount/": "certs",
		"/var/lib/kubelet/pods/uid-1/volumes/tls/mount":                      "",
		"/var/lib/kubelet/pods/uid-1/volumes/kubernetes.io~csi/tls":          "",
		"": "",
	} {
		if got := volumeName(target); got != want {
			t.Errorf("volumeName(%q) = %q, want %q", target, got, want)
		}
	}
}

func TestEachVolumeWithAKnownExpiryHasItsSeries(t *testing.T) {
	vols := fakeVolumes{
		{ID: "csi-1", TargetPath: webTarget, Pod: attributes.Pod{Namespace: "shop", Name: "web-0"}, Issuer: shopCA,
			NotBefore: t0, NotAfter: t0.Add(24 * time.Hour), RenewAt: t0.Add(16 * time.Hour)},
		// Outside the kubelet's layout the volume is named by its ID.
		{ID: "csi-2", TargetPath: "/elsewhere/target", Pod: attributes.Pod{Namespace: "shop", Name: "web-1"}, Issuer: meshCA,
			NotBefore: t0, NotAfter: t0.Add(time.Hour), RenewAt: t0.Add(40 * time.Minute)},
		// Stranded: no issuer known, but its expiry is, and it is not renewed.
		{ID: "csi-3", TargetPath: "/var/lib/kubelet/pods/uid-3/volumes/kubernetes.io~csi/tls/mount", Pod: attributes.Pod{Namespace: "bank", Name: "db-0"},
			NotBefore: t0, NotAfter: t0.Add(2 * time.Hour), RenewAt: t0.Add(80 * time.Minute), Stranded: "refused"},
		// Nothing known of it: no series.
		{ID: "csi-4", Stranded: "does not parse"},
	}
	r, err := New(Options{Volumes: vols})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`certmint_driver_certificate_not_after_timestamp_seconds{issuer="",namespace="bank",pod="db-0",volume="tls"}`:                                   1.893560645e+09,
		`certmint_driver_certificate_not_after_timestamp_seconds{issuer="clusterissuers.certmint.io/mesh",namespace="shop",pod="web-1",volume="csi-2"}`: 1.893557045e+09,
		`certmint_driver_certificate_not_after_timestamp_seconds{issuer="issuers.certmint.io/shop.ca",namespace="shop",pod="web-0",volume="tls"}`:       1.893639845e+09,
		`certmint_driver_certificate_renewal_timestamp_seconds{issuer="",namespace="bank",pod="db-0",volume="tls"}`:                                     1.893558245e+09,
		`certmint_driver_certificate_renewal_timestamp_seconds{issuer="clusterissuers.certmint.io/mesh",namespace="shop",pod="web-1",volume="csi-2"}`:   1.893555845e+09,
		`certmint_driver_certificate_renewal_timestamp_seconds{issuer="issuers.certmint.io/shop.ca",namespace="shop",pod="web-0",volume="tls"}`:         1.893611045e+09,
	}
	if got := metricstest.Series(t, r); !maps.Equal(got, want) {
		t.Errorf("series:\n%s\nwant:\n%s", metricstest.Format(got), metricstest.Format(want))
	}
}

func TestAPodRecreatedUnderItsNameReportsOnlyItsNewerVolume(t *testing.T) {
	old := manager.Volume{ID: "csi-old", TargetPath: webTarget, Pod: attributes.Pod{Namespace: "shop", Name: "web-0", UID: "uid-1"}, Issuer: shopCA,
		NotBefore: t0, NotAfter: t0.Add(time.Hour), RenewAt: t0.Add(40 * time.Minute)}
	recreated := old
	recreated.ID, recreated.Pod.UID, recreated.TargetPath = "csi-new", "uid-2", strings.Replace(webTarget, "uid-1", "uid-2", 1)
	recreated.NotBefore, recreated.NotAfter, recreated.RenewAt = t0.Add(time.Minute), t0.Add(time.Hour+time.Minute), t0.Add(41*time.Minute)
	const labels = `{issuer="issuers.certmint.io/shop.ca",namespace="shop",pod="web-0",volume="tls"}`
	want := map[string]float64{
		"certmint_driver_certificate_not_after_timestamp_seconds" + labels: float64(recreated.NotAfter.Unix()),
		"certmint_driver_certificate_renewal_timestamp_seconds" + labels:   float64(recreated.RenewAt.Unix()),
	}
	for _, vols := range []fakeVolumes{{old, recreated}, {recreated, old}} {
		r, err := New(Options{Volumes: vols})
		if err != nil {
			t.Fatal(err)
		}
		// series gathers through a registry, which fails on two series
		// with one label set, as a scrape would.
		if got := metricstest.Series(t, r); !maps.Equal(got, want) {
			t.Errorf("series:\n%s\nwant the recreated pod's:\n%s", metricstest.Format(got), metricstest.Format(want))
		}
	}
}
