package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

const driverUser = "system:serviceaccount:certmint:certmint-driver"

var (
	keysOnce sync.Once
	keys     map[string]crypto.Signer
)

// testKey returns one key per kind for the whole test run: RSA generation is
// slow enough to matter in a table.
func testKey(t *testing.T, kind string) crypto.Signer {
	t.Helper()
	keysOnce.Do(func() {
		keys = map[string]crypto.Signer{}
		p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		keys["p256"], keys["p384"], keys["rsa2048"], keys["ed25519"] = p256, p384, rsa2048, ed
	})
	return keys[kind]
}

func csrFor(t *testing.T, key crypto.Signer, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// validInput is a request the default policy approves: the driver on node-a
// asks for web's SPIFFE ID and Service name, web being on node-a.
func validInput(t *testing.T) Input {
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/default/sa/web-sa")
	return Input{
		ClusterDomain: "cluster.local",
		TrustDomain:   "cluster.local",
		Issuer:        request.IssuerRef{Kind: request.KindIssuer, Namespace: "default", Name: "ca"},
		Request: csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{
			DNSNames: []string{"web-sa.default.svc", "web-sa.default.svc.cluster.local"},
			URIs:     []*url.URL{spiffe},
		}),
		CSRSource: CSRSource{
			DriverUsername:     driverUser,
			DriverNamespace:    "certmint",
			DriverDaemonSet:    "certmint-driver",
			DriverDaemonSetUID: "ds-uid",
			CSR: &certificatesv1.CertificateSigningRequest{
				ObjectMeta: metav1.ObjectMeta{
					Name:        "csr-1",
					Labels:      map[string]string{request.LabelManagedBy: request.DriverName, request.LabelNode: "node-a", request.LabelPodUID: "pod-uid"},
					Annotations: map[string]string{request.AnnotationPodNamespace: "default", request.AnnotationPodName: "web-0"},
				},
				Spec: certificatesv1.CertificateSigningRequestSpec{
					SignerName:        "issuers.certmint.io/default.ca",
					Username:          driverUser,
					ExpirationSeconds: ptr.To[int32](3600),
					Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth},
					Extra: map[string]certificatesv1.ExtraValue{
						request.ExtraNodeName: {"node-a"},
						request.ExtraPodName:  {"driver-a"},
						request.ExtraPodUID:   {"driver-uid"},
					},
				},
			},
			Pod: &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-0", UID: "pod-uid"},
				Spec:       corev1.PodSpec{NodeName: "node-a", ServiceAccountName: "web-sa"},
				Status:     corev1.PodStatus{Phase: corev1.PodPending},
			},
			DriverPod: &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Namespace: "certmint", Name: "driver-a", UID: "driver-uid",
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "certmint-driver", UID: "ds-uid", Controller: ptr.To(true)}}},
				Spec: corev1.PodSpec{NodeName: "node-a"},
			},
		},
	}
}

// rawSubject encodes one RDN per attribute, in the order given.
func rawSubject(t *testing.T, atvs ...pkix.AttributeTypeAndValue) []byte {
	t.Helper()
	var seq pkix.RDNSequence
	for _, atv := range atvs {
		seq = append(seq, pkix.RelativeDistinguishedNameSET{atv})
	}
	raw, err := asn1.Marshal(seq)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestDecide(t *testing.T) {
	withNames := func(cn string, dns []string, uris ...string) func(*testing.T, *Input) {
		return func(t *testing.T, in *Input) {
			tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}, DNSNames: dns}
			for _, u := range uris {
				parsed, err := url.Parse(u)
				if err != nil {
					t.Fatal(err)
				}
				tmpl.URIs = append(tmpl.URIs, parsed)
			}
			in.Request = csrFor(t, testKey(t, "p256"), tmpl)
		}
	}
	// withIPs asks for the pod's Service name and the addresses ips; the
	// pod has 10.244.1.5 and fd00:10:244:1::5, and the policy (when
	// podIPs) certifies the pod network 10.244.0.0/16 and fd00:10:244::/48.
	withIPs := func(podIPs bool, ips ...string) func(*testing.T, *Input) {
		return func(t *testing.T, in *Input) {
			tmpl := &x509.CertificateRequest{DNSNames: []string{"web-sa.default.svc"}}
			for _, ip := range ips {
				tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
			}
			in.Request = csrFor(t, testKey(t, "p256"), tmpl)
			in.Pod.Status.PodIPs = []corev1.PodIP{{IP: "10.244.1.5"}, {IP: "fd00:10:244:1::5"}}
			in.Pod.Status.PodIP = "10.244.1.5"
			if podIPs {
				in.Policy = &v1alpha1.Policy{PodIPs: &v1alpha1.PodIPPolicy{CIDRs: []string{"10.244.0.0/16", "fd00:10:244::/48"}}}
			}
		}
	}
	// then runs the modifications in order.
	then := func(mods ...func(*testing.T, *Input)) func(*testing.T, *Input) {
		return func(t *testing.T, in *Input) {
			for _, m := range mods {
				m(t, in)
			}
		}
	}
	asksForPodIPs := func(_ *testing.T, in *Input) {
		in.CSR.Annotations[request.AnnotationPodIPs] = request.PodIPsPrimary
	}
	withinNodePodCIDRs := func(cidrs ...string) func(*testing.T, *Input) {
		return func(_ *testing.T, in *Input) {
			in.Policy.PodIPs.WithinNodePodCIDRs = true
			in.NodePodCIDRs = cidrs
		}
	}
	withKey := func(kind string) func(*testing.T, *Input) {
		return func(t *testing.T, in *Input) {
			in.Request = csrFor(t, testKey(t, kind), &x509.CertificateRequest{DNSNames: []string{"web-sa.default.svc"}})
		}
	}
	tests := []struct {
		name        string
		modify      func(*testing.T, *Input)
		wantReason  string // empty: allowed
		wantMessage string
	}{
		// Node binding.
		{name: "the driver on the pod's node is approved", modify: func(*testing.T, *Input) {}},
		{name: "a requester other than the driver is denied", wantReason: ReasonNotDriver, wantMessage: "came from system:serviceaccount:default:evil",
			modify: func(_ *testing.T, in *Input) { in.CSR.Spec.Username = "system:serviceaccount:default:evil" }},
		{name: "a request without a pod-bound token is denied", wantReason: ReasonNotPodBound,
			modify: func(_ *testing.T, in *Input) { delete(in.CSR.Spec.Extra, request.ExtraNodeName) }},
		{name: "a request whose driver pod is gone is denied", wantReason: ReasonDriverPodMismatch, wantMessage: "no longer exists",
			modify: func(_ *testing.T, in *Input) { in.DriverPod = nil }},
		{name: "a request whose driver pod was replaced is denied", wantReason: ReasonDriverPodMismatch, wantMessage: "replaced",
			modify: func(_ *testing.T, in *Input) { in.DriverPod.UID = "other" }},
		{name: "a request whose driver pod runs on another node is denied", wantReason: ReasonDriverPodMismatch, wantMessage: `runs on node "node-b"`,
			modify: func(_ *testing.T, in *Input) { in.DriverPod.Spec.NodeName = "node-b" }},
		{name: "a request whose driver pod is being deleted is denied", wantReason: ReasonDriverPodMismatch, wantMessage: "being deleted",
			modify: func(_ *testing.T, in *Input) { in.DriverPod.DeletionTimestamp = ptr.To(metav1.Now()) }},
		{name: "a pod of the driver's ServiceAccount outside its DaemonSet is denied", wantReason: ReasonNotDriver, wantMessage: "not a pod of DaemonSet certmint/certmint-driver",
			modify: func(_ *testing.T, in *Input) { in.DriverPod.OwnerReferences = nil }},
		{name: "a driver pod of another DaemonSet is denied", wantReason: ReasonNotDriver,
			modify: func(_ *testing.T, in *Input) { in.DriverPod.OwnerReferences[0].Name = "other" }},
		{name: "a driver pod that only refers to the DaemonSet without being controlled by it is denied", wantReason: ReasonNotDriver,
			modify: func(_ *testing.T, in *Input) { in.DriverPod.OwnerReferences[0].Controller = nil }},
		{name: "a driver pod controlled by a DaemonSet of another API group is denied", wantReason: ReasonNotDriver,
			modify: func(_ *testing.T, in *Input) { in.DriverPod.OwnerReferences[0].APIVersion = "example.com/v1" }},
		{name: "a driver pod whose owner reference names the DaemonSet with another UID is denied", wantReason: ReasonNotDriver,
			modify: func(_ *testing.T, in *Input) { in.DriverPod.OwnerReferences[0].UID = "forged" }},
		{name: "a driver pod is denied while its DaemonSet does not exist", wantReason: ReasonNotDriver, wantMessage: "that DaemonSet does not exist",
			modify: func(_ *testing.T, in *Input) { in.DriverDaemonSetUID = "" }},
		{name: "a request that names no pod is denied", wantReason: ReasonMissingPodRef,
			modify: func(_ *testing.T, in *Input) { delete(in.CSR.Labels, request.LabelPodUID) }},
		{name: "a request labelled for another node is denied", wantReason: ReasonNodeMismatch, wantMessage: `labelled for node "node-b"`,
			modify: func(_ *testing.T, in *Input) { in.CSR.Labels[request.LabelNode] = "node-b" }},
		{name: "a request for a missing pod is denied", wantReason: ReasonPodNotFound, wantMessage: "pod default/web-0 does not exist",
			modify: func(_ *testing.T, in *Input) { in.Pod = nil }},
		{name: "a request for a replaced pod is denied", wantReason: ReasonPodUIDMismatch,
			modify: func(_ *testing.T, in *Input) { in.Pod.UID = "new-uid" }},
		{name: "a request for a pod on another node is denied", wantReason: ReasonNodeMismatch,
			wantMessage: `pod default/web-0 is on node "node-b" but the request came from the driver on node "node-a"`,
			modify:      func(_ *testing.T, in *Input) { in.Pod.Spec.NodeName = "node-b" }},
		{name: "a request for a terminated pod is denied", wantReason: ReasonPodTerminated,
			modify: func(_ *testing.T, in *Input) { in.Pod.Status.Phase = corev1.PodSucceeded }},
		{name: "a request for a pod being deleted is denied", wantReason: ReasonPodTerminated, wantMessage: "being deleted",
			modify: func(_ *testing.T, in *Input) { in.Pod.DeletionTimestamp = ptr.To(metav1.Now()) }},
		{name: "a mirror pod is denied", wantReason: ReasonMirrorPod,
			modify: func(_ *testing.T, in *Input) {
				in.Pod.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "hash"}
			}},
		{name: "a pod owned by a Node is denied as a mirror pod even without the annotation", wantReason: ReasonMirrorPod,
			modify: func(_ *testing.T, in *Input) {
				in.Pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "node-a", UID: "node-uid", Controller: ptr.To(true)}}
			}},
		{name: "a pod without a ServiceAccount is denied", wantReason: ReasonNoServiceAccount,
			modify: func(_ *testing.T, in *Input) { in.Pod.Spec.ServiceAccountName = "" }},
		{name: "a request naming a pod name no pod can have is denied", wantReason: ReasonInvalidPodRef, wantMessage: `pod name "web/0"`,
			modify: func(_ *testing.T, in *Input) { in.CSR.Annotations[request.AnnotationPodName] = "web/0" }},
		{name: "a request naming a pod UID no pod can have is denied", wantReason: ReasonInvalidPodRef, wantMessage: `pod UID "-1"`,
			modify: func(_ *testing.T, in *Input) { in.CSR.Labels[request.LabelPodUID] = "-1" }},
		{name: "a namespaced Issuer denies pods of other namespaces", wantReason: ReasonWrongNamespace,
			modify: func(_ *testing.T, in *Input) { in.Issuer.Namespace = "other" }},
		{name: "a ClusterIssuer serves pods of any namespace",
			modify: func(_ *testing.T, in *Input) {
				in.Issuer = request.IssuerRef{Kind: request.KindClusterIssuer, Name: "ca"}
			}},

		// Request contents.
		{name: "an unparseable request is denied", wantReason: ReasonInvalidRequest,
			modify: func(_ *testing.T, in *Input) { in.Request = nil }},
		{name: "a request with basicConstraints CA:TRUE is denied", wantReason: ReasonCANotAllowed,
			modify: func(t *testing.T, in *Input) {
				value, err := asn1.Marshal(struct{ IsCA bool }{true})
				if err != nil {
					t.Fatal(err)
				}
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{
					DNSNames:        []string{"web-sa.default.svc"},
					ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: value}},
				})
			}},
		{name: "a CA request is allowed when the policy allows CA certificates",
			modify: func(t *testing.T, in *Input) {
				value, err := asn1.Marshal(struct{ IsCA bool }{true})
				if err != nil {
					t.Fatal(err)
				}
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{
					DNSNames:        []string{"web-sa.default.svc"},
					ExtraExtensions: []pkix.Extension{{Id: oidBasicConstraints, Critical: true, Value: value}},
				})
				in.CSR.Spec.Usages = append(in.CSR.Spec.Usages, certificatesv1.UsageCertSign)
				in.Policy = &v1alpha1.Policy{AllowCA: true}
			}},
		{name: "a request with usage cert sign is denied", wantReason: ReasonCANotAllowed,
			modify: func(_ *testing.T, in *Input) {
				in.CSR.Spec.Usages = append(in.CSR.Spec.Usages, certificatesv1.UsageCertSign)
			}},
		{name: "a request with a usage outside the allowed set is denied", wantReason: ReasonUsageNotAllowed, wantMessage: `"code signing"`,
			modify: func(_ *testing.T, in *Input) {
				in.CSR.Spec.Usages = []certificatesv1.KeyUsage{certificatesv1.UsageCodeSigning}
			}},
		{name: "an RSA 2048 key is allowed by default", modify: withKey("rsa2048")},
		{name: "an Ed25519 key is allowed by default", modify: withKey("ed25519")},
		{name: "a key type the policy leaves out is denied", wantReason: ReasonKeyTypeNotAllowed, wantMessage: "key Ed25519 is not allowed; allowed: ECDSA (256 bits or more)",
			modify: func(t *testing.T, in *Input) {
				withKey("ed25519")(t, in)
				in.Policy = &v1alpha1.Policy{AllowedKeyTypes: []v1alpha1.KeyType{{Algorithm: v1alpha1.KeyAlgorithmECDSA}}}
			}},
		{name: "a key below the policy's minimum size is denied", wantReason: ReasonKeyTypeNotAllowed, wantMessage: "key ECDSA 256 is not allowed",
			modify: func(_ *testing.T, in *Input) {
				in.Policy = &v1alpha1.Policy{AllowedKeyTypes: []v1alpha1.KeyType{{Algorithm: v1alpha1.KeyAlgorithmECDSA, MinSize: ptr.To[int32](384)}}}
			}},
		{name: "a key at the policy's minimum size is allowed",
			modify: func(t *testing.T, in *Input) {
				withKey("p384")(t, in)
				in.Policy = &v1alpha1.Policy{AllowedKeyTypes: []v1alpha1.KeyType{{Algorithm: v1alpha1.KeyAlgorithmECDSA, MinSize: ptr.To[int32](384)}}}
			}},
		{name: "a duration over the default maximum is denied", wantReason: ReasonDurationTooLong,
			modify: func(_ *testing.T, in *Input) {
				in.CSR.Spec.ExpirationSeconds = ptr.To(int32((DefaultMaxDuration + time.Second) / time.Second))
			}},
		{name: "a duration over the policy's maximum is denied", wantReason: ReasonDurationTooLong, wantMessage: "ask for 1h0m0s or less",
			modify: func(_ *testing.T, in *Input) {
				in.CSR.Spec.ExpirationSeconds = ptr.To[int32](7200)
				in.Policy = &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: time.Hour}}
			}},
		{name: "a duration within a widened maximum is allowed",
			modify: func(_ *testing.T, in *Input) {
				in.CSR.Spec.ExpirationSeconds = ptr.To(int32(90 * 24 * 3600))
				in.Policy = &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: 90 * 24 * time.Hour}}
			}},
		{name: "an IP address SAN is denied", wantReason: ReasonIPAddressForbidden,
			modify: func(t *testing.T, in *Input) {
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}})
			}},

		// Pod addresses.
		{name: "the pod's own address is allowed when the issuer certifies pod addresses", modify: withIPs(true, "10.244.1.5")},
		{name: "both addresses of a dual-stack pod are allowed", modify: withIPs(true, "10.244.1.5", "fd00:10:244:1::5")},
		{name: "the pod's own address alone is an identity",
			modify: then(withIPs(true), func(t *testing.T, in *Input) {
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.244.1.5")}})
			})},
		{name: "another pod's address is denied", wantReason: ReasonPodIPMismatch,
			wantMessage: "10.244.1.9 is not an address of pod default/web-0, whose addresses are 10.244.1.5, fd00:10:244:1::5",
			modify:      withIPs(true, "10.244.1.5", "10.244.1.9")},
		{name: "a literal address that is no pod's is denied even when the issuer certifies pod addresses", wantReason: ReasonPodIPMismatch,
			wantMessage: "8.8.8.8 is not an address of pod default/web-0", modify: withIPs(true, "8.8.8.8")},
		{name: "the pod's own address is denied when the issuer does not certify pod addresses", wantReason: ReasonIPAddressForbidden,
			wantMessage: "certifies no pod addresses (policy.podIPs)", modify: withIPs(false, "10.244.1.5")},
		{name: "an address is denied while the pod has none", wantReason: ReasonPodIPMismatch, wantMessage: "which has none yet",
			modify: then(withIPs(true, "10.244.1.5"), func(_ *testing.T, in *Input) { in.Pod.Status.PodIPs, in.Pod.Status.PodIP = nil, "" })},
		{name: "an address a node wrote into its pod's status outside the pod network is denied", wantReason: ReasonIPAddressForbidden,
			wantMessage: "8.8.8.8, an address of pod default/web-0, is outside the pod network Issuer default/ca certifies (policy.podIPs.cidrs: 10.244.0.0/16, fd00:10:244::/48)",
			modify:      then(withIPs(true, "8.8.8.8"), func(_ *testing.T, in *Input) { in.Pod.Status.PodIPs = []corev1.PodIP{{IP: "8.8.8.8"}} })},
		{name: "a policy whose only range is /0 certifies nothing", wantReason: ReasonIPAddressForbidden, wantMessage: "outside the pod network",
			modify: then(withIPs(true, "10.244.1.5"), func(_ *testing.T, in *Input) { in.Policy.PodIPs.CIDRs = []string{"0.0.0.0/0"} })},
		{name: "a host-network pod's address, which is its node's, is denied", wantReason: ReasonIPAddressForbidden, wantMessage: "uses its node's network",
			modify: then(withIPs(true, "10.244.1.5"), func(_ *testing.T, in *Input) { in.Pod.Spec.HostNetwork = true })},
		{name: "an address within the node's podCIDRs is allowed when the policy asks for it",
			modify: then(withIPs(true, "10.244.1.5"), withinNodePodCIDRs("10.244.1.0/24"))},
		{name: "another node's pod address is denied when the policy asks for the node's podCIDRs", wantReason: ReasonIPAddressForbidden,
			wantMessage: "10.244.1.5, an address of pod default/web-0, is outside the podCIDRs of its node node-a (10.244.2.0/24)",
			modify:      then(withIPs(true, "10.244.1.5"), withinNodePodCIDRs("10.244.2.0/24"))},
		{name: "a pod on a node without podCIDRs gets no address when the policy asks for them", wantReason: ReasonIPAddressForbidden,
			wantMessage: "node node-a of pod default/web-0 has no spec.podCIDRs", modify: then(withIPs(true, "10.244.1.5"), withinNodePodCIDRs())},
		{name: "a first request that will ask for the pod's addresses is approved when the issuer certifies them",
			modify: then(withIPs(true), asksForPodIPs)},
		{name: "a first request that will ask for the pod's addresses is denied when the issuer never certifies them", wantReason: ReasonIPAddressForbidden,
			wantMessage: "the volume asks for its pod's addresses as IP SANs", modify: then(withIPs(false), asksForPodIPs)},
		{name: "a first request that will ask for a host-network pod's addresses is denied", wantReason: ReasonIPAddressForbidden, wantMessage: "uses its node's network",
			modify: then(withIPs(true), asksForPodIPs, func(_ *testing.T, in *Input) { in.Pod.Spec.HostNetwork = true })},
		{name: "a first request that will ask for the pod's addresses is denied on a node without podCIDRs when the policy asks for them", wantReason: ReasonIPAddressForbidden,
			wantMessage: "has no spec.podCIDRs", modify: then(withIPs(true), asksForPodIPs, withinNodePodCIDRs())},

		{name: "an email SAN is denied", wantReason: ReasonEmailForbidden,
			modify: func(t *testing.T, in *Input) {
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{EmailAddresses: []string{"a@example.com"}})
			}},
		{name: "a subject with two common names is denied", wantReason: ReasonSubjectNotAllowed, wantMessage: "2 common names",
			modify: func(t *testing.T, in *Input) {
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{RawSubject: rawSubject(t,
					pkix.AttributeTypeAndValue{Type: oidCommonName, Value: "admin"},
					pkix.AttributeTypeAndValue{Type: oidCommonName, Value: "web-0"})})
			}},
		{name: "two common names in one RDN are denied too", wantReason: ReasonSubjectNotAllowed,
			modify: func(t *testing.T, in *Input) {
				raw, err := asn1.Marshal(pkix.RDNSequence{{{Type: oidCommonName, Value: "web-0"}, {Type: oidCommonName, Value: "admin"}}})
				if err != nil {
					t.Fatal(err)
				}
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{RawSubject: raw})
			}},
		{name: "an emailAddress in the subject is denied", wantReason: ReasonEmailForbidden, wantMessage: "emailAddress",
			modify: func(t *testing.T, in *Input) {
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{RawSubject: rawSubject(t,
					pkix.AttributeTypeAndValue{Type: oidEmailAddress, Value: "ceo@example.com"},
					pkix.AttributeTypeAndValue{Type: oidCommonName, Value: "web-0"})})
			}},
		{name: "a request naming nothing is denied", wantReason: ReasonNoIdentity, modify: withNames("", nil)},
		{name: "an organization longer than X.509 allows is denied, and the message does not quote all of it", wantReason: ReasonSubjectNotAllowed,
			wantMessage: "organization",
			modify: func(t *testing.T, in *Input) {
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{
					Subject: pkix.Name{Organization: []string{strings.Repeat("o", 70000)}}, DNSNames: []string{"web-sa.default.svc"}})
			}},
		{name: "a subject with too many attributes is denied", wantReason: ReasonSubjectNotAllowed, wantMessage: "at most 32",
			modify: func(t *testing.T, in *Input) {
				in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{
					Subject: pkix.Name{OrganizationalUnit: strings.Split(strings.Repeat("u,", 40)+"u", ",")}, DNSNames: []string{"web-sa.default.svc"}})
			}},

		// Names under the default policy.
		{name: "the pod's own Service-style names are allowed", modify: withNames("web-0.default.svc", []string{"web-0.default.svc", "web-0.default.svc.cluster.local"})},
		{name: "the pod's bare name is denied by default", wantReason: ReasonNameNotAllowed, wantMessage: `DNS name "web-0"`,
			modify: withNames("", []string{"web-0"})},
		{name: "the pod's name in its namespace outside the service domain is denied by default", wantReason: ReasonNameNotAllowed,
			modify: withNames("", []string{"web-0.default"})},
		{name: "a pod named like a domain in a namespace named like a top-level domain gets no such domain", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				in.Pod.Name, in.Pod.Namespace = "google", "com"
				in.CSR.Annotations[request.AnnotationPodName], in.CSR.Annotations[request.AnnotationPodNamespace] = "google", "com"
				in.Issuer = request.IssuerRef{Kind: request.KindClusterIssuer, Name: "ca"}
				withNames("", []string{"google.com"})(t, in)
			}},
		{name: "a pod named localhost does not get localhost", wantReason: ReasonNameNotAllowed, wantMessage: `"localhost"`,
			modify: func(t *testing.T, in *Input) {
				in.Pod.Name = "localhost"
				in.CSR.Annotations[request.AnnotationPodName] = "localhost"
				withNames("localhost", []string{"localhost"})(t, in)
				in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"${POD_NAME}", "*"}}
			}},
		{name: "localhost is issued when the policy lists it", modify: func(t *testing.T, in *Input) {
			withNames("", []string{"localhost"})(t, in)
			in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"localhost"}}
		}},
		{name: "a bare pod name is issued when the policy lists the template", modify: func(t *testing.T, in *Input) {
			withNames("", []string{"web-0"})(t, in)
			in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"${POD_NAME}"}}
		}},
		{name: "another pod's Service name is denied", wantReason: ReasonNameNotAllowed, wantMessage: `DNS name "db.default.svc" is not allowed for pod default/web-0`,
			modify: withNames("", []string{"db.default.svc"})},
		{name: "the ServiceAccount's name in another namespace is denied", wantReason: ReasonNameNotAllowed,
			modify: withNames("", []string{"web-sa.kube-system.svc"})},
		{name: "another ServiceAccount's SPIFFE ID is denied", wantReason: ReasonNameNotAllowed, wantMessage: "spiffe://cluster.local/ns/default/sa/admin",
			modify: withNames("", nil, "spiffe://cluster.local/ns/default/sa/admin")},
		{name: "a SPIFFE ID in another trust domain is denied", wantReason: ReasonNameNotAllowed,
			modify: withNames("", nil, "spiffe://evil.example/ns/default/sa/web-sa")},
		{name: "a common name that is an allowed DNS name is allowed", modify: withNames("web-sa.default.svc", nil)},
		{name: "a common name that is an allowed URI is allowed", modify: withNames("spiffe://cluster.local/ns/default/sa/web-sa", nil)},
		{name: "a dotted pod name does not fill more than one label", wantReason: ReasonNameNotAllowed, wantMessage: `DNS name "api.kube-system.default.svc"`,
			modify: func(t *testing.T, in *Input) {
				in.Pod.Name = "api.kube-system"
				in.CSR.Annotations[request.AnnotationPodName] = "api.kube-system"
				withNames("", []string{"api.kube-system.default.svc"})(t, in)
			}},
		{name: "a dotted pod name is no common name either", wantReason: ReasonNameNotAllowed, wantMessage: `common name "api.kube-system.default.svc"`,
			modify: func(t *testing.T, in *Input) {
				in.Pod.Name = "api.kube-system"
				in.CSR.Annotations[request.AnnotationPodName] = "api.kube-system"
				withNames("api.kube-system.default.svc", nil)(t, in)
			}},
		{name: "a dotted ServiceAccount name does not fill more than one label", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				in.Pod.Spec.ServiceAccountName = "api.prod"
				withNames("", []string{"api.prod.default.svc"})(t, in)
			}},
		{name: "a dotted pod name still gets the patterns it does not appear in",
			modify: func(t *testing.T, in *Input) {
				in.Pod.Name = "a.b.svc"
				in.CSR.Annotations[request.AnnotationPodName] = "a.b.svc"
			}},
		{name: "a common name outside the allowed names is denied", wantReason: ReasonNameNotAllowed, wantMessage: `common name "admin"`,
			modify: withNames("admin", nil)},

		// Names under an issuer policy.
		{name: "a policy wildcard allows one label",
			modify: func(t *testing.T, in *Input) {
				withNames("", []string{"api.default.example.com"})(t, in)
				in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.com"}}
			}},
		{name: "a policy wildcard does not span labels", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				withNames("", []string{"a.b.default.example.com"})(t, in)
				in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.com"}}
			}},
		{name: "a policy list replaces the defaults", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				withNames("", []string{"web-sa.default.svc"})(t, in)
				in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"${POD_NAME}.example.com"}}
			}},
		{name: "an empty policy list allows no URIs", wantReason: ReasonNameNotAllowed, wantMessage: "allowed: none",
			modify: func(_ *testing.T, in *Input) { in.Policy = &v1alpha1.Policy{AllowedURIs: []string{}} }},
		{name: "a policy URI wildcard does not match an escaped slash", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				withNames("", nil, "spiffe://cluster.local/ns/default/sa/x%2F..%2F..%2Fns%2Fkube-system%2Fsa%2Fadmin")(t, in)
				in.Policy = &v1alpha1.Policy{AllowedURIs: []string{"spiffe://${TRUST_DOMAIN}/ns/${POD_NAMESPACE}/sa/*"}}
			}},
		{name: "a policy URI wildcard does not match a dot-dot segment", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				withNames("", nil, "spiffe://cluster.local/ns/default/sa/..")(t, in)
				in.Policy = &v1alpha1.Policy{AllowedURIs: []string{"spiffe://${TRUST_DOMAIN}/ns/${POD_NAMESPACE}/sa/*"}}
			}},
		{name: "a URI with a query the pattern does not have is denied", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				withNames("", nil, "spiffe://cluster.local/ns/default/sa/x?ns=kube-system")(t, in)
				in.Policy = &v1alpha1.Policy{AllowedURIs: []string{"spiffe://${TRUST_DOMAIN}/ns/${POD_NAMESPACE}/sa/*"}}
			}},
		{name: "a URI with a fragment the pattern does not have is denied", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				withNames("", nil, "spiffe://cluster.local/ns/default/sa/web-sa#admin")(t, in)
			}},
		{name: "a URI with user info the pattern does not have is denied", wantReason: ReasonNameNotAllowed,
			modify: func(t *testing.T, in *Input) {
				withNames("", nil, "spiffe://admin@cluster.local/ns/default/sa/web-sa")(t, in)
				in.Policy = &v1alpha1.Policy{AllowedURIs: []string{"spiffe://*/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}"}}
			}},
		{name: "a DNS name with a NUL byte is denied", wantReason: ReasonNameNotAllowed, wantMessage: "not a valid DNS name",
			modify: func(t *testing.T, in *Input) {
				withNames("", []string{"evil.com\x00.default.example.com"})(t, in)
				in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.com"}}
			}},
		{name: "a DNS name with a port and a slash is denied", wantReason: ReasonNameNotAllowed, wantMessage: "not a valid DNS name",
			modify: func(t *testing.T, in *Input) {
				withNames("", []string{"evil.com:443/.default.example.com"})(t, in)
				in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.com"}}
			}},
		{name: "a wildcard DNS name the policy allows is allowed",
			modify: func(t *testing.T, in *Input) {
				withNames("", []string{"*.default.example.com"})(t, in)
				in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.com"}}
			}},
		{name: "a common name that is no valid DNS name does not pass as one", wantReason: ReasonNameNotAllowed, wantMessage: "common name",
			modify: func(t *testing.T, in *Input) {
				withNames("evil.com:443/.default.example.com", nil)(t, in)
				in.Policy = &v1alpha1.Policy{AllowedDNSNames: []string{"*.${POD_NAMESPACE}.example.com"}}
			}},
		{name: "a policy URI wildcard allows one path segment",
			modify: func(t *testing.T, in *Input) {
				withNames("", nil, "spiffe://cluster.local/ns/default/sa/anything")(t, in)
				in.Policy = &v1alpha1.Policy{AllowedURIs: []string{"spiffe://${TRUST_DOMAIN}/ns/${POD_NAMESPACE}/sa/*"}}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := validInput(t)
			tt.modify(t, &in)
			d := Decide(in)
			if tt.wantReason == "" {
				if !d.Allowed {
					t.Fatalf("denied (%s: %s), want allowed", d.Reason, d.Message)
				}
				return
			}
			if d.Allowed {
				t.Fatalf("allowed, want denied with %s", tt.wantReason)
			}
			if d.Reason != tt.wantReason || !strings.Contains(d.Message, tt.wantMessage) {
				t.Errorf("denied with %s: %q; want %s containing %q", d.Reason, d.Message, tt.wantReason, tt.wantMessage)
			}
		})
	}
}

func TestAllowCertifiesNoAddressForARequestOfNoPod(t *testing.T) {
	// A Certificate is for its namespace, not a pod: it has no addresses
	// of its own, whatever the policy certifies.
	d := Allow(Allowed{
		Issuer:  request.IssuerRef{Kind: request.KindIssuer, Namespace: "default", Name: "ca"},
		Policy:  &v1alpha1.Policy{PodIPs: &v1alpha1.PodIPPolicy{CIDRs: []string{"10.244.0.0/16"}}},
		Binding: Binding{Namespace: "default"},
		Request: &issuer.Request{DNSNames: []string{"web.default.svc"}, IPAddresses: []net.IP{net.ParseIP("10.244.1.5")},
			PublicKey: testKey(t, "p256").Public()},
	})
	if d.Allowed || d.Reason != ReasonIPAddressForbidden || !strings.Contains(d.Message, "namespace default, no pod") {
		t.Errorf("decision %+v, want %s naming the namespace", d, ReasonIPAddressForbidden)
	}
}

func TestDecideDuration(t *testing.T) {
	in := validInput(t)
	if d := Decide(in); d.Duration != time.Hour {
		t.Errorf("duration = %s, want the requested 1h", d.Duration)
	}
	in.CSR.Spec.ExpirationSeconds = nil
	if d := Decide(in); d.Duration != DefaultDuration {
		t.Errorf("duration = %s, want the default %s", d.Duration, DefaultDuration)
	}
	in.Policy = &v1alpha1.Policy{MaxDuration: &metav1.Duration{Duration: time.Hour}}
	if d := Decide(in); d.Duration != time.Hour {
		t.Errorf("duration = %s, want the default shortened to the policy's maximum", d.Duration)
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"a.b", "a.b", true},
		{"a.b", "a.bc", false},
		{"*.b", "x.b", true},
		{"*.b", ".b", false},
		{"*.b", "x.y.b", false},
		{"a*c.d", "abbc.d", true},
		{"a*c.d", "ab.c.d", false},
		{"*", "", false},
		{"*", "a.b", false},
	}
	for _, tt := range tests {
		if got := glob(tt.pattern, tt.s, dnsLabelChar); got != tt.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestURIGlob(t *testing.T) {
	const pattern = "spiffe://td/sa/*"
	tests := []struct {
		s    string
		want bool
	}{
		{"spiffe://td/sa/web-0.v1_x~y", true},
		{"spiffe://td/sa/a/b", false},
		{"spiffe://td/sa/.", false},
		{"spiffe://td/sa/..", false},
		{"spiffe://td/sa/x%2F..%2Fadmin", false},
		{"spiffe://td/sa/x?ns=kube-system", false},
		{"spiffe://td/sa/x#admin", false},
		{"spiffe://td/sa/", false},
	}
	for _, tt := range tests {
		if got := glob(pattern, tt.s, uriWildcardChar); got != tt.want {
			t.Errorf("glob(%q, %q) = %v, want %v", pattern, tt.s, got, tt.want)
		}
	}
	if !glob("https://td/x?v=*", "https://td/x?v=1", uriWildcardChar) {
		t.Error("a query the pattern spells out is not allowed")
	}
}

func TestExpandLeavesOutPatternsWithEmptyValues(t *testing.T) {
	values := map[string]string{TemplatePodNamespace: "default", TemplateServiceAccountName: "", TemplateTrustDomain: "cluster.local"}
	got := expand([]string{"spiffe://${TRUST_DOMAIN}/ns/${POD_NAMESPACE}/sa/${SERVICE_ACCOUNT_NAME}", "spiffe://${TRUST_DOMAIN}/ns/${POD_NAMESPACE}"}, values)
	if want := []string{"spiffe://cluster.local/ns/default"}; !slices.Equal(got, want) {
		t.Errorf("expand = %q, want %q: a pattern whose template is empty must not become a name with an empty segment", got, want)
	}
}

func TestDenialsQuoteHugeValuesInPart(t *testing.T) {
	in := validInput(t)
	huge := strings.Repeat("a", 70000) + ".default.svc"
	in.Request = csrFor(t, testKey(t, "p256"), &x509.CertificateRequest{DNSNames: []string{huge}})
	d := Decide(in)
	if d.Allowed {
		t.Fatal("a 70,000-character DNS name was allowed")
	}
	if len(d.Message) > 1000 {
		t.Errorf("denial message is %d bytes long; values must be quoted in part", len(d.Message))
	}
}

// oidBasicConstraints is written out here so that the tests build CA
// requests as any client would, not through the code under test.
var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
