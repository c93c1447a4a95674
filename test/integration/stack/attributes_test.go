package stack_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/certmint/certmint/pkg/attributes"
)

// publish publishes v with attrs through the driver, waiting as long as the
// kubelet would, and unpublishes it when the test ends.
func publish(t *testing.T, v interface {
	PublishRequest(map[string]string) *csispec.NodePublishVolumeRequest
}, attrs map[string]string) (*csispec.NodePublishVolumeRequest, error) {
	t.Helper()
	req := v.PublishRequest(attrs)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	_, err := env.Driver.Node.NodePublishVolume(ctx, req)
	if err == nil {
		t.Cleanup(func() {
			_, _ = env.Driver.Node.NodeUnpublishVolume(context.Background(), &csispec.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
		})
	}
	return req, err
}

// leafOf reads the certificate the volume at target holds and checks that
// it verifies against the volume's own CA file.
func leafOf(t *testing.T, target string) *x509.Certificate {
	t.Helper()
	chainPEM, err := os.ReadFile(filepath.Join(target, "tls.crt"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(target, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		t.Fatal("tls.crt holds no certificate")
	}
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the certificate does not verify against the volume's ca.crt: %v", err)
	}
	return chain[0]
}

// TestIdentityAttributesReachTheCertificate publishes one volume per
// identity-bearing attribute through the real driver, has the real
// controller decide and sign it, and checks the certificate the pod gets.
func TestIdentityAttributesReachTheCertificate(t *testing.T) {
	requireEnv(t)
	const spiffe = "spiffe://cluster.local/ns/" + workloadNS + "/sa/" + workloadSA
	cases := []struct {
		name  string
		attrs map[string]string
		// check inspects the certificate; wantCode and wantText the error
		// of a volume the controller refuses.
		check    func(t *testing.T, pod string, leaf *x509.Certificate)
		wantCode codes.Code
		wantText string
	}{
		{
			name:  "dns-names and spiffe-id give the pod's Service name and SPIFFE ID",
			attrs: map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.SPIFFEID: spiffe},
			check: func(t *testing.T, pod string, leaf *x509.Certificate) {
				if want := []string{pod + "." + workloadNS + ".svc"}; !slices.Equal(leaf.DNSNames, want) {
					t.Errorf("DNS names %v, want %v", leaf.DNSNames, want)
				}
				if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffe {
					t.Errorf("URIs %v, want %s", leaf.URIs, spiffe)
				}
				if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve.Params().BitSize != 256 {
					t.Errorf("key %T, want ECDSA P-256 by default", leaf.PublicKey)
				}
			},
		},
		{
			name:  "uri-sans gives the URI",
			attrs: map[string]string{attributes.URISANs: "spiffe://cluster.local/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}"},
			check: func(t *testing.T, _ string, leaf *x509.Certificate) {
				if len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffe || len(leaf.DNSNames) != 0 {
					t.Errorf("URIs %v DNS %v, want %s alone", leaf.URIs, leaf.DNSNames, spiffe)
				}
			},
		},
		{
			name:  "literal-subject gives exactly that subject",
			attrs: map[string]string{attributes.LiteralSubject: "CN=${POD_NAME}.${POD_NAMESPACE}.svc,OU=payments,O=Example\\, Inc.,C=DE"},
			check: func(t *testing.T, pod string, leaf *x509.Certificate) {
				var got pkix.RDNSequence
				if _, err := asn1.Unmarshal(leaf.RawSubject, &got); err != nil {
					t.Fatal(err)
				}
				want, err := attributes.ParseLiteralSubject("CN=" + pod + "." + workloadNS + ".svc,OU=payments,O=Example\\, Inc.,C=DE")
				if err != nil {
					t.Fatal(err)
				}
				wantDER, _ := asn1.Marshal(want)
				if !bytes.Equal(leaf.RawSubject, wantDER) {
					t.Errorf("subject %s, want %s in that order", got, want)
				}
			},
		},
		{
			name:     "ip-sans is refused by the default policy, with its reason",
			attrs:    map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.IPSANs: "10.0.0.1"},
			wantCode: codes.PermissionDenied,
			wantText: "IPAddressNotAllowed",
		},
		{
			name:     "ip-sans with ${POD_IP} is refused at once by an issuer that certifies no pod addresses, before the pod has one",
			attrs:    map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.IPSANs: "${POD_IP}"},
			wantCode: codes.PermissionDenied,
			wantText: "the volume asks for its pod's addresses as IP SANs (${POD_IP} or ${POD_IPS} in ip-sans), which ClusterIssuer shop-ca does not certify (policy.podIPs)",
		},
		{
			name:     "a literal address is refused even by an issuer that certifies pod addresses",
			attrs:    map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.IPSANs: "10.244.9.9", attributes.IssuerName: caIssuerPodIPs},
			wantCode: codes.PermissionDenied,
			wantText: "PodIPMismatch",
		},
		{
			name:  "key-algorithm Ed25519 gives an Ed25519 certificate",
			attrs: map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.KeyAlgorithm: "Ed25519"},
			check: func(t *testing.T, _ string, leaf *x509.Certificate) {
				if _, ok := leaf.PublicKey.(ed25519.PublicKey); !ok {
					t.Errorf("key %T, want Ed25519", leaf.PublicKey)
				}
			},
		},
		{
			name:  "key-algorithm RSA with key-size gives that RSA key and key encipherment",
			attrs: map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.KeyAlgorithm: "RSA", attributes.KeySize: "3072"},
			check: func(t *testing.T, _ string, leaf *x509.Certificate) {
				if k, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || k.N.BitLen() != 3072 {
					t.Errorf("key %T, want RSA 3072", leaf.PublicKey)
				}
				if leaf.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
					t.Errorf("key usage %b lacks key encipherment", leaf.KeyUsage)
				}
			},
		},
		{
			name:  "key-usages gives those usages and no others",
			attrs: map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.KeyUsages: "digital signature,client auth"},
			check: func(t *testing.T, _ string, leaf *x509.Certificate) {
				if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || leaf.KeyUsage != x509.KeyUsageDigitalSignature {
					t.Errorf("usages %b %v, want digital signature and client auth alone", leaf.KeyUsage, leaf.ExtKeyUsage)
				}
			},
		},
		{
			name: "is-ca from an issuer that allows it gives a CA for leaves under the pod's names",
			attrs: map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.IsCA: "true",
				attributes.IssuerName: caIssuerCA},
			check: func(t *testing.T, pod string, leaf *x509.Certificate) {
				if !leaf.IsCA || !leaf.MaxPathLenZero || leaf.KeyUsage&x509.KeyUsageCertSign == 0 {
					t.Errorf("IsCA %v MaxPathLenZero %v usage %b, want a CA that signs leaves only", leaf.IsCA, leaf.MaxPathLenZero, leaf.KeyUsage)
				}
				if want := []string{pod + "." + workloadNS + ".svc"}; !leaf.PermittedDNSDomainsCritical || !slices.Equal(leaf.PermittedDNSDomains, want) {
					t.Errorf("name constraints %v (critical %v), want %v", leaf.PermittedDNSDomains, leaf.PermittedDNSDomainsCritical, want)
				}
			},
		},
		{
			name:     "is-ca from an issuer under the default policy is refused",
			attrs:    map[string]string{attributes.DNSNames: "${POD_NAME}.${POD_NAMESPACE}.svc", attributes.IsCA: "true"},
			wantCode: codes.PermissionDenied,
			wantText: "CANotAllowed",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newVolume(t, "identity")
			attrs := map[string]string{attributes.IssuerName: caIssuer, attributes.IssuerKind: "ClusterIssuer"}
			for k, val := range c.attrs {
				attrs[k] = val
			}
			req, err := publish(t, v, attrs)
			if c.wantCode != codes.OK {
				if status.Code(err) != c.wantCode || !strings.Contains(err.Error(), c.wantText) {
					t.Fatalf("publish = %v, want %s with %q", err, c.wantCode, c.wantText)
				}
				return
			}
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			c.check(t, v.Pod.Name, leafOf(t, req.TargetPath))
		})
	}
}
