package manager

import (
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"slices"
	"testing"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/keystore"
	"github.com/certmint/certmint/pkg/request"
)

func TestBuildCSRCarriesTheSpecAndNamesThePod(t *testing.T) {
	spec, err := attributes.Parse(map[string]string{
		attributes.PodNameKey: "web-0", attributes.PodNamespaceKey: "shop", attributes.PodUIDKey: "uid-1",
		attributes.ServiceAccountNameKey: "web", attributes.IssuerName: "ca", attributes.IsCA: "true",
		attributes.LiteralSubject: "CN=web,O=Shop", attributes.DNSNames: "web.shop.svc", attributes.Duration: "2h",
	})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := keystore.Generate(keystore.ECDSA, 256)
	cert := spec.CertificateFor(nil)
	obj, err := buildCSR("csi-1", spec, &cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if obj.Spec.SignerName != "issuers.certmint.io/shop.ca" || *obj.Spec.ExpirationSeconds != 7200 {
		t.Errorf("signer %q, expiration %d", obj.Spec.SignerName, *obj.Spec.ExpirationSeconds)
	}
	if obj.Labels[request.LabelPodUID] != "uid-1" || obj.Annotations[request.AnnotationPodName] != "web-0" ||
		obj.Annotations[request.AnnotationPodNamespace] != "shop" || obj.Annotations[request.AnnotationVolumeID] != "csi-1" {
		t.Errorf("metadata = %+v", obj.ObjectMeta)
	}
	if len(obj.Spec.Usages) != len(spec.Certificate.Usages) {
		t.Errorf("usages = %v, want %v", obj.Spec.Usages, spec.Certificate.Usages)
	}
	block, _ := pem.Decode(obj.Spec.Request)
	if block == nil {
		t.Fatal("request is not PEM")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := req.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	if req.Subject.String() != "CN=web,O=Shop" || len(req.DNSNames) != 1 || !req.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(key.Public()) {
		t.Errorf("request subject %q, DNS %v", req.Subject, req.DNSNames)
	}
	var isCA bool
	for _, ext := range req.Extensions {
		if ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 19}) && ext.Critical {
			isCA = true
		}
	}
	if !isCA {
		t.Error("request for a CA certificate has no basicConstraints extension")
	}
	if _, ok := obj.Annotations[request.AnnotationPodIPs]; ok {
		t.Error("a volume that asks for no pod address says it does")
	}
}

func TestBuildCSRNamesThePodsAddressesAndSaysItAsksForThem(t *testing.T) {
	spec, err := attributes.Parse(map[string]string{
		attributes.PodNameKey: "web-0", attributes.PodNamespaceKey: "shop", attributes.PodUIDKey: "uid-1",
		attributes.ServiceAccountNameKey: "web", attributes.IssuerName: "ca",
		attributes.DNSNames: "web.shop.svc", attributes.IPSANs: "${POD_IPS}",
	})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := keystore.Generate(keystore.ECDSA, 256)
	for _, c := range []struct {
		name string
		ips  []net.IP
	}{
		{"before the pod has an address", nil},
		{"once it has two", []net.IP{net.ParseIP("10.244.1.5"), net.ParseIP("fd00::5")}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert := spec.CertificateFor(c.ips)
			obj, err := buildCSR("csi-1", spec, &cert, key)
			if err != nil {
				t.Fatal(err)
			}
			if got := obj.Annotations[request.AnnotationPodIPs]; got != request.PodIPsAll {
				t.Errorf("annotation %s = %q, want %q", request.AnnotationPodIPs, got, request.PodIPsAll)
			}
			block, _ := pem.Decode(obj.Spec.Request)
			req, err := x509.ParseCertificateRequest(block.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(req.IPAddresses, c.ips, net.IP.Equal) {
				t.Errorf("request names %v, want %v", req.IPAddresses, c.ips)
			}
		})
	}
}
