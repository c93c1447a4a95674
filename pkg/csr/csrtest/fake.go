package csrtest

import (
	"k8s.io/client-go/kubernetes/fake"
	certificatesv1client "k8s.io/client-go/kubernetes/typed/certificates/v1"
)

// FakeCSRs is a fake clientset's CertificateSigningRequest client, for
// csr.Options.Client.
type FakeCSRs struct {
	certificatesv1client.CertificateSigningRequestInterface
}

// IsWatchListSemanticsUnSupported tells the informer, as the fake clientset
// itself does, that the fake cannot stream a watch's initial list; the
// informer would wait for that list forever.
func (FakeCSRs) IsWatchListSemanticsUnSupported() bool { return true }

// CSRs returns client's CertificateSigningRequest client as a FakeCSRs.
func CSRs(client *fake.Clientset) FakeCSRs {
	return FakeCSRs{client.CertificatesV1().CertificateSigningRequests()}
}
