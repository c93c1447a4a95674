package deploy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// The certmint resources.
var (
	Certificates   = schema.GroupVersionResource{Group: "certmint.io", Version: "v1alpha1", Resource: "certificates"}
	Orders         = schema.GroupVersionResource{Group: "certmint.io", Version: "v1alpha1", Resource: "orders"}
	Challenges     = schema.GroupVersionResource{Group: "certmint.io", Version: "v1alpha1", Resource: "challenges"}
	ClusterIssuers = schema.GroupVersionResource{Group: "certmint.io", Version: "v1alpha1", Resource: "clusterissuers"}
	Issuers        = schema.GroupVersionResource{Group: "certmint.io", Version: "v1alpha1", Resource: "issuers"}
)

// CAClusterIssuer generates a CA, stores it as a kubernetes.io/tls Secret
// named name in Namespace (the controller's cluster resource namespace),
// creates a ClusterIssuer name of the ca kind for it, and waits until the
// issuer is Ready. It returns the root certificate.
//
// The issuer's CA is an intermediate under that root, as most real CAs are,
// so pods verify chains longer than one certificate.
func CAClusterIssuer(ctx context.Context, cfg *rest.Config, name string) (*x509.Certificate, error) {
	return CAClusterIssuerWithPolicy(ctx, cfg, name, nil)
}

// CAClusterIssuerWithPolicy is CAClusterIssuer with the policy block policy
// (nil for none).
func CAClusterIssuerWithPolicy(ctx context.Context, cfg *rest.Config, name string, policy map[string]any) (*x509.Certificate, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	data, root, err := CASecretData("certmint e2e")
	if err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: Namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       data,
	}
	if _, err := client.CoreV1().Secrets(Namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating CA Secret: %w", err)
	}
	issuer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "certmint.io/v1alpha1",
		"kind":       "ClusterIssuer",
		"metadata":   map[string]any{"name": name},
		"spec":       map[string]any{"ca": map[string]any{"secretName": name}},
	}}
	if policy != nil {
		issuer.Object["spec"].(map[string]any)["policy"] = policy
	}
	if _, err := dyn.Resource(ClusterIssuers).Create(ctx, issuer, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating ClusterIssuer: %w", err)
	}
	return root, waitIssuerReady(ctx, dyn, name)
}

// SelfSignedClusterIssuer creates a selfSigned ClusterIssuer name with the
// policy block policy (nil for none) and waits until it is Ready.
func SelfSignedClusterIssuer(ctx context.Context, cfg *rest.Config, name string, policy map[string]any) error {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	spec := map[string]any{"selfSigned": map[string]any{}}
	if policy != nil {
		spec["policy"] = policy
	}
	issuer := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "certmint.io/v1alpha1",
		"kind":       "ClusterIssuer",
		"metadata":   map[string]any{"name": name},
		"spec":       spec,
	}}
	if _, err := dyn.Resource(ClusterIssuers).Create(ctx, issuer, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating ClusterIssuer: %w", err)
	}
	return waitIssuerReady(ctx, dyn, name)
}

func waitIssuerReady(ctx context.Context, dyn dynamic.Interface, name string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	state := "not seen"
	for {
		u, err := dyn.Resource(ClusterIssuers).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			state = "no Ready condition"
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			for _, c := range conds {
				if c, _ := c.(map[string]any); c["type"] == "Ready" {
					if c["status"] == "True" {
						return nil
					}
					state = fmt.Sprintf("Ready=%v %v: %v", c["status"], c["reason"], c["message"])
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for ClusterIssuer %s to be Ready: %w; last state: %s", name, ctx.Err(), state)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// CASecretData generates a root and an intermediate under it, both named
// after name, and returns the data of a kubernetes.io/tls Secret for a ca
// issuer signing with the intermediate, and the root.
func CASecretData(name string) (map[string][]byte, *x509.Certificate, error) {
	now := time.Now()
	root, rootKey, err := newCA(name+" root", now, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	intermediate, intermediateKey, err := newCA(name+" intermediate", now, root, rootKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(intermediateKey)
	if err != nil {
		return nil, nil, err
	}
	return map[string][]byte{
		corev1.TLSCertKey:       append(pemCert(intermediate), pemCert(root)...),
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"ca.crt":                pemCert(root),
	}, root, nil
}

// newCA makes a CA certificate valid for a day, self-signed when parent is
// nil.
func newCA(cn string, now time.Time, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("creating CA %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
