package csr

import (
	"context"
	"net/http"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/gentype"
	"k8s.io/client-go/rest"
)

// API is the CertificateSigningRequest client the package needs: the calls
// it makes of client-go's typed one, which a clientset's
// CertificatesV1().CertificateSigningRequests() provides, fake included.
type API interface {
	Create(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, opts metav1.CreateOptions) (*certificatesv1.CertificateSigningRequest, error)
	List(ctx context.Context, opts metav1.ListOptions) (*certificatesv1.CertificateSigningRequestList, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// NewAPI returns an API backed by the API server that cfg and httpClient
// reach. It is what client-go's typed client builds, with a scheme of only
// this API group: importing the typed client would link the types of every
// API group, through the scheme it registers them all in, into the binary
// and its resident set.
func NewAPI(cfg *rest.Config, httpClient *http.Client) (API, error) {
	scheme := runtime.NewScheme()
	if err := certificatesv1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	// Meta types (options, Status) in v1 too, as client-go's scheme has them.
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &certificatesv1.SchemeGroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(scheme, serializer.NewCodecFactory(scheme)).WithoutConversion()
	client, err := rest.RESTClientForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	return gentype.NewClientWithList("certificatesigningrequests", client, runtime.NewParameterCodec(scheme), "",
		func() *certificatesv1.CertificateSigningRequest { return &certificatesv1.CertificateSigningRequest{} },
		func() *certificatesv1.CertificateSigningRequestList {
			return &certificatesv1.CertificateSigningRequestList{}
		},
		gentype.PrefersProtobuf[*certificatesv1.CertificateSigningRequest]()), nil
}
