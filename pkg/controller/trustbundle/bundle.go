package trustbundle

import (
	"encoding/pem"
	"fmt"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
)

// LabelManagedBy, set to ManagedBy, marks the ClusterTrustBundles this
// controller keeps. It is how the controller finds its own, and the only
// ones it ever changes or deletes; users select certmint's bundles by it.
const (
	LabelManagedBy = "app.kubernetes.io/managed-by"
	ManagedBy      = "certmint"
)

// nameSuffix ends every name Name gives. The API wants the name of a
// bundle with a signer to start with the signer name (with ':' for '/')
// and ':', and the rest to be a DNS subdomain.
const nameSuffix = ":bundle"

// maxBundleSize is the most the API server accepts in spec.trustBundle.
const maxBundleSize = 1 << 20

// Name is the name of the ClusterTrustBundle that publishes ref's trust
// bundle: its signer name with ':' for '/', then ":bundle", such as
// clusterissuers.certmint.io:corp-ca:bundle or
// issuers.certmint.io:shop.ca:bundle.
func Name(ref request.IssuerRef) string {
	return strings.ReplaceAll(ref.SignerName(), "/", ":") + nameSuffix
}

// refFor is the inverse of Name; false for a name Name does not give,
// which is no bundle of this controller's. Signer domains and the names
// of namespaces and issuers hold no ':', so the one ':' before the suffix
// is the signer's '/'.
func refFor(name string) (request.IssuerRef, bool) {
	prefix, ok := strings.CutSuffix(name, nameSuffix)
	if !ok || strings.Count(prefix, ":") != 1 {
		return request.IssuerRef{}, false
	}
	ref, ok := request.ParseSignerName(strings.Replace(prefix, ":", "/", 1))
	if !ok || Name(ref) != name {
		return request.IssuerRef{}, false
	}
	return ref, true
}

// managed reports whether ctb is one this controller keeps: it carries
// the label, and is for a certmint signer, the only ones the controller
// may attest. Anything else is never touched.
func managed(ctb *certificatesv1.ClusterTrustBundle) bool {
	if ctb.Labels[LabelManagedBy] != ManagedBy {
		return false
	}
	_, ok := request.ParseSignerName(ctb.Spec.SignerName)
	return ok
}

// desired is the ClusterTrustBundle that publishes iss's trust bundle, or
// nil when iss is nil (it does not exist), is being deleted or publishes no
// bundle. The bundle is status.trustBundle as it is: the issuer controller
// keeps the CAs of a rotation there until they have retired. The error
// says why the API server would refuse the bundle, in words for the
// issuer's owner.
func desired(iss v1alpha1.GenericIssuer) (*certificatesv1.ClusterTrustBundle, error) {
	if iss == nil || iss.GetDeletionTimestamp() != nil {
		return nil, nil
	}
	bundle := iss.GetStatus().TrustBundle
	if strings.TrimSpace(bundle) == "" {
		return nil, nil
	}
	ref := issuer.RefFor(iss)
	name := Name(ref)
	// Object names are DNS subdomains, at most 253 characters, nearly
	// everywhere in Kubernetes. kube-apiserver 1.37 checks only the part of
	// a ClusterTrustBundle's name after the signer, not its length; certmint
	// does not build on that gap.
	if len(name) > validation.DNS1123SubdomainMaxLength {
		return nil, fmt.Errorf("its name %s would have %d characters, more than the %d of an object name; an issuer name of at most %d characters fits",
			name, len(name), validation.DNS1123SubdomainMaxLength, validation.DNS1123SubdomainMaxLength-(len(name)-len(ref.Name)))
	}
	if err := validateBundle(bundle); err != nil {
		return nil, fmt.Errorf("status.trustBundle: %w", err)
	}
	return &certificatesv1.ClusterTrustBundle{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: map[string]string{LabelManagedBy: ManagedBy},
		},
		Spec: certificatesv1.ClusterTrustBundleSpec{SignerName: ref.SignerName(), TrustBundle: bundle},
	}, nil
}

// validateBundle applies the API server's rules for spec.trustBundle, so
// that a bundle it would refuse is reported on the issuer rather than
// retried: at most 1 MiB, only CERTIFICATE blocks, without PEM headers,
// each a CA with valid basic constraints, none twice. Every problem is
// named at once.
func validateBundle(bundle string) error {
	if len(bundle) > maxBundleSize {
		return fmt.Errorf("it is %d bytes, more than the %d a ClusterTrustBundle holds", len(bundle), maxBundleSize)
	}
	certs, err := pki.ParseCertificates([]byte(bundle))
	if err != nil {
		return err
	}
	var problems []string
	for _, i := range blocksWithHeaders([]byte(bundle)) {
		problems = append(problems, fmt.Sprintf("certificate %d has PEM headers", i))
	}
	first := map[string]int{}
	for i, c := range certs {
		n := i + 1
		if !c.IsCA || !c.BasicConstraintsValid {
			problems = append(problems, fmt.Sprintf("certificate %d (%s) is not a CA: it lacks basicConstraints CA:TRUE", n, c.Subject))
		}
		if prev, ok := first[string(c.Raw)]; ok {
			problems = append(problems, fmt.Sprintf("certificate %d repeats certificate %d", n, prev))
		} else {
			first[string(c.Raw)] = n
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return nil
}

// blocksWithHeaders numbers, from 1, the PEM blocks of data that carry
// headers. pki's readers ignore headers, which is right for reading
// certificates; the API server refuses a bundle with them. The blocks are
// those pki.ParseCertificates read, every one a certificate.
func blocksWithHeaders(data []byte) []int {
	var out []int
	for n := 1; ; n++ {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return out
		}
		if len(block.Headers) > 0 {
			out = append(out, n)
		}
	}
}
