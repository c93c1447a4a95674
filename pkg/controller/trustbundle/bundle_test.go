package trustbundle

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"strings"
	"testing"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/pki/pkitest"
	"github.com/certmint/certmint/pkg/request"
)

func TestNameIsTheSignerNameAndRefForInvertsIt(t *testing.T) {
	for _, tc := range []struct {
		ref  request.IssuerRef
		want string
	}{
		{request.IssuerRef{Kind: request.KindClusterIssuer, Name: "corp-ca"}, "clusterissuers.certmint.io:corp-ca:bundle"},
		{request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca"}, "issuers.certmint.io:shop.ca:bundle"},
		// The first dot ends the namespace, as in signer names.
		{request.IssuerRef{Kind: request.KindIssuer, Namespace: "shop", Name: "ca.v2"}, "issuers.certmint.io:shop.ca.v2:bundle"},
		{request.IssuerRef{Kind: request.KindClusterIssuer, Name: "ca.example.com"}, "clusterissuers.certmint.io:ca.example.com:bundle"},
	} {
		got := Name(tc.ref)
		if got != tc.want {
			t.Errorf("Name(%v) = %q, want %q", tc.ref, got, tc.want)
		}
		// The API's rule for the name of a bundle with a signer.
		if prefix := strings.ReplaceAll(tc.ref.SignerName(), "/", ":") + ":"; !strings.HasPrefix(got, prefix) {
			t.Errorf("Name(%v) = %q does not start with %q", tc.ref, got, prefix)
		}
		if back, ok := refFor(got); !ok || back != tc.ref {
			t.Errorf("refFor(%q) = %v, %v; want %v", got, back, ok, tc.ref)
		}
	}
}

func TestRefForRefusesNamesNameDoesNotGive(t *testing.T) {
	for _, name := range []string{
		"",
		"bundle",
		"clusterissuers.certmint.io:corp-ca",
		"clusterissuers.certmint.io:corp-ca:v1",
		"clusterissuers.certmint.io::bundle",
		"issuers.certmint.io:shop:bundle",
		"issuers.certmint.io:shop.:bundle",
		"example.com:signer:bundle",
		"clusterissuers.certmint.io:a:b:bundle",
		"kubernetes.io:kube-apiserver-serving:bundle",
	} {
		if ref, ok := refFor(name); ok {
			t.Errorf("refFor(%q) = %v, want none", name, ref)
		}
	}
}

func TestManagedNeedsTheLabelAndACertmintSigner(t *testing.T) {
	ctb := func(labels map[string]string, signer string) *certificatesv1.ClusterTrustBundle {
		return &certificatesv1.ClusterTrustBundle{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: certificatesv1.ClusterTrustBundleSpec{SignerName: signer}}
	}
	ours := map[string]string{LabelManagedBy: ManagedBy}
	for _, tc := range []struct {
		name string
		ctb  *certificatesv1.ClusterTrustBundle
		want bool
	}{
		{"labelled, for a ClusterIssuer", ctb(ours, "clusterissuers.certmint.io/ca"), true},
		{"labelled, for an Issuer", ctb(ours, "issuers.certmint.io/shop.ca"), true},
		{"without the label", ctb(nil, "clusterissuers.certmint.io/ca"), false},
		{"labelled for another manager", ctb(map[string]string{LabelManagedBy: "helm"}, "clusterissuers.certmint.io/ca"), false},
		{"labelled, for another signer", ctb(ours, "example.com/ca"), false},
		{"labelled, without a signer", ctb(ours, ""), false},
	} {
		if got := managed(tc.ctb); got != tc.want {
			t.Errorf("%s: managed = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// certs makes the certificates bundle tests use: two CAs and a leaf.
func certs(t *testing.T) (ca1, ca2, leaf *x509.Certificate) {
	t.Helper()
	ca1, key := pkitest.CA(t, "ca 1")
	ca2, _ = pkitest.CA(t, "ca 2")
	return ca1, ca2, pkitest.Leaf(t, "leaf", ca1, key)
}

func pemString(certs ...*x509.Certificate) string {
	return string(pki.EncodeCertificates(certs...))
}

func TestValidateBundleAppliesTheAPIServersRules(t *testing.T) {
	ca1, ca2, leaf := certs(t)
	// A certificate with basicConstraints that say it is not a CA.
	notCA, _ := pkitest.Sign(t, &x509.Certificate{Subject: pkix.Name{CommonName: "not a ca"}, BasicConstraintsValid: true}, nil, nil)
	withHeaders := string(pem.EncodeToMemory(&pem.Block{Type: pki.BlockCertificate, Headers: map[string]string{"Comment": "ca 2"}, Bytes: ca2.Raw}))
	for _, tc := range []struct {
		name   string
		bundle string
		// want are the parts the error must name; none means valid.
		want []string
	}{
		{"one CA is valid", pemString(ca1), nil},
		{"two CAs are valid", pemString(ca1, ca2), nil},
		{"text between blocks is valid", "ca 1\n" + pemString(ca1) + "ca 2\n" + pemString(ca2), nil},
		{"a leaf is not a CA", pemString(ca1, leaf), []string{"certificate 2 (CN=leaf) is not a CA"}},
		{"basicConstraints without CA is not a CA", pemString(notCA), []string{"certificate 1 (CN=not a ca) is not a CA"}},
		{"a certificate twice is refused", pemString(ca1, ca2, ca1), []string{"certificate 3 repeats certificate 1"}},
		{"PEM headers are refused", pemString(ca1) + withHeaders, []string{"certificate 2 has PEM headers"}},
		{"every problem is named at once", pemString(leaf, ca1, ca1) + withHeaders, []string{
			"certificate 4 has PEM headers", "certificate 1 (CN=leaf) is not a CA", "certificate 3 repeats certificate 2",
		}},
		{"a private key is refused", pemString(ca1) + "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", []string{`"PRIVATE KEY"`, "not a certificate"}},
		{"no certificate is refused", "not PEM", []string{"no PEM certificate"}},
		{"a certificate that does not parse is refused", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", []string{"certificate 1"}},
		{"more than 1 MiB is refused", pemString(ca1) + strings.Repeat("#", 1<<20), []string{"bytes, more than the 1048576"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := validateBundle(tc.bundle)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestDesiredPublishesStatusTrustBundleAsItIs(t *testing.T) {
	ca1, ca2, leaf := certs(t)
	// As during a rotation: the new CA, then the retiring one.
	rotating := pemString(ca2) + pemString(ca1)
	withStatus := func(iss v1alpha1.GenericIssuer, bundle string) v1alpha1.GenericIssuer {
		iss.GetStatus().TrustBundle = bundle
		return iss
	}
	clusterIssuer := func(name string) *v1alpha1.ClusterIssuer {
		return &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: name}}
	}
	issuerIn := func(ns, name string) *v1alpha1.Issuer {
		return &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	}
	deleting := issuerIn("shop", "ca")
	deleting.DeletionTimestamp = &metav1.Time{}
	// The longest ClusterIssuer name whose bundle name fits 253 characters.
	longest := strings.Repeat("a", 253-len(Name(request.IssuerRef{Kind: request.KindClusterIssuer})))

	for _, tc := range []struct {
		name       string
		iss        v1alpha1.GenericIssuer
		wantName   string
		wantSigner string
		wantErr    string
	}{
		{name: "no issuer has no bundle", iss: nil},
		{name: "an issuer without a trust bundle has none", iss: withStatus(issuerIn("shop", "ca"), "")},
		{name: "a blank trust bundle is none", iss: withStatus(issuerIn("shop", "ca"), "\n")},
		{name: "an issuer being deleted has none", iss: withStatus(deleting, rotating)},
		{name: "a ClusterIssuer's", iss: withStatus(clusterIssuer("corp"), rotating),
			wantName: "clusterissuers.certmint.io:corp:bundle", wantSigner: "clusterissuers.certmint.io/corp"},
		{name: "an Issuer's", iss: withStatus(issuerIn("shop", "ca"), rotating),
			wantName: "issuers.certmint.io:shop.ca:bundle", wantSigner: "issuers.certmint.io/shop.ca"},
		{name: "a name of 253 characters fits", iss: withStatus(clusterIssuer(longest), rotating),
			wantName: "clusterissuers.certmint.io:" + longest + ":bundle", wantSigner: "clusterissuers.certmint.io/" + longest},
		{name: "a longer name says how long the issuer's may be", iss: withStatus(clusterIssuer(longest+"a"), rotating),
			wantErr: "more than the 253 of an object name; an issuer name of at most 219 characters fits"},
		{name: "a bundle the API would refuse says why", iss: withStatus(issuerIn("shop", "ca"), pemString(ca1, leaf)),
			wantErr: "status.trustBundle: certificate 2 (CN=leaf) is not a CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := desired(tc.iss)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				if got != nil {
					t.Errorf("a bundle with the error: %v", got)
				}
				return
			case err != nil:
				t.Fatal(err)
			case tc.wantName == "":
				if got != nil {
					t.Errorf("want no bundle, got %s", got.Name)
				}
				return
			case got == nil:
				t.Fatal("no bundle")
			}
			if got.Name != tc.wantName || got.Spec.SignerName != tc.wantSigner {
				t.Errorf("name %q signer %q, want %q %q", got.Name, got.Spec.SignerName, tc.wantName, tc.wantSigner)
			}
			if got.Spec.TrustBundle != tc.iss.GetStatus().TrustBundle {
				t.Errorf("trustBundle = %q, want status.trustBundle exactly", got.Spec.TrustBundle)
			}
			if len(got.Labels) != 1 || got.Labels[LabelManagedBy] != ManagedBy {
				t.Errorf("labels = %v, want only %s=%s", got.Labels, LabelManagedBy, ManagedBy)
			}
			if !managed(got) {
				t.Error("the bundle is not one the controller manages")
			}
		})
	}
}
