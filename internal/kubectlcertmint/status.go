package kubectlcertmint

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
)

// StuckAfter is how long a request may wait for a decision or a
// certificate before status counts it as stuck. The controller decides
// and signs a request in one pass, in well under a second, unless the
// issuer is not Ready, its backend makes it wait (an ACME order), or no
// controller runs.
const StuckAfter = time.Minute

// StatusOptions choose what status reports.
type StatusOptions struct {
	// Namespace narrows Issuers, Certificates, Orders and requests (by the
	// pod they are for) to one namespace; ClusterIssuers are always
	// reported.
	Namespace string
	// AllNamespaces reports every namespace.
	AllNamespaces bool
}

// StatusReport is certmint's state as the API shows it: every issuer, and
// what is not well among requests, Certificates and Orders.
type StatusReport struct {
	// Healthy is false when something below needs attention: an issuer not
	// Ready, a request denied, failed or stuck, a Certificate not Ready or
	// an Order invalid.
	Healthy      bool                `json:"healthy"`
	Issuers      []IssuerStatus      `json:"issuers"`
	Requests     []RequestStatus     `json:"requests"`
	Certificates []CertificateStatus `json:"certificates"`
	Orders       []OrderStatus       `json:"orders"`
	now          time.Time
}

// IssuerStatus is an issuer's readiness and CAs.
type IssuerStatus struct {
	Issuer Issuer `json:"issuer"`
	// Ready is the Ready condition's status: True, False, or Unknown when
	// the controller has not reported one.
	Ready   string `json:"ready"`
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
	// CANotAfter is when the first certificate of the trust bundle that is
	// not retiring expires: the issuer's CA, as relying parties trust it.
	CANotAfter *time.Time `json:"caNotAfter,omitempty"`
	// RetiringCAs are CAs no longer signing, kept in the bundle until then.
	RetiringCAs   []RetiringCA `json:"retiringCAs,omitempty"`
	ReissueBefore *time.Time   `json:"reissueBefore,omitempty"`
	// Problem says why the issuer needs attention; empty when it does not.
	Problem string `json:"problem,omitempty"`
}

// RetiringCA is a CA leaving an issuer's trust bundle.
type RetiringCA struct {
	Subject string    `json:"subject"`
	Until   time.Time `json:"until"`
}

// RequestStatus is a certmint CertificateSigningRequest not yet issued,
// or denied or failed.
type RequestStatus struct {
	Name   string `json:"name"`
	Issuer Issuer `json:"issuer"`
	// Pod is namespace/name of the pod the request names, and Node the
	// node whose driver asked.
	Pod  string `json:"pod,omitempty"`
	Node string `json:"node,omitempty"`
	// State is Pending (no decision), Approved (waiting for its
	// certificate), Denied or Failed.
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Message string    `json:"message,omitempty"`
	Created time.Time `json:"created"`
	Problem string    `json:"problem,omitempty"`
}

// CertificateStatus is a Certificate that is not Ready.
type CertificateStatus struct {
	Namespace string     `json:"namespace"`
	Name      string     `json:"name"`
	Issuer    Issuer     `json:"issuer"`
	Reason    string     `json:"reason,omitempty"`
	Message   string     `json:"message,omitempty"`
	NotAfter  *time.Time `json:"notAfter,omitempty"`
}

// OrderStatus is an ACME Order that is not valid.
type OrderStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Issuer    Issuer `json:"issuer"`
	// For is the request the order is for, Kind/name.
	For     string    `json:"for"`
	State   string    `json:"state"`
	Reason  string    `json:"reason,omitempty"`
	Message string    `json:"message,omitempty"`
	Created time.Time `json:"created"`
	Problem string    `json:"problem,omitempty"`
}

// Status reads every issuer and the requests, Certificates and Orders of
// the namespace (or of all). A part it cannot read is left out and its
// error returned with what it could read.
func Status(ctx context.Context, env *Env, opts StatusOptions) (*StatusReport, error) {
	namespace := opts.Namespace
	if opts.AllNamespaces {
		namespace = ""
	}
	now := env.clock().Now()
	var (
		clusterIssuers v1alpha1.ClusterIssuerList
		issuers        v1alpha1.IssuerList
		certificates   v1alpha1.CertificateList
		orders         v1alpha1.OrderList
		csrs           *certificatesv1.CertificateSigningRequestList
		errs           []error
	)
	errs = append(errs,
		listAs(ctx, env.Dynamic, clusterIssuersResource, "", &clusterIssuers),
		listAs(ctx, env.Dynamic, issuersResource, namespace, &issuers),
		listAs(ctx, env.Dynamic, certificatesResource, namespace, &certificates),
		listAs(ctx, env.Dynamic, ordersResource, namespace, &orders))
	csrs, err := env.Kube.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
	if err != nil {
		errs = append(errs, fmt.Errorf("listing certificatesigningrequests: %w", err))
		csrs = &certificatesv1.CertificateSigningRequestList{}
	}
	var generic []v1alpha1.GenericIssuer
	for i := range clusterIssuers.Items {
		generic = append(generic, &clusterIssuers.Items[i])
	}
	for i := range issuers.Items {
		generic = append(generic, &issuers.Items[i])
	}
	report := buildStatus(now, namespace, generic, csrs.Items, certificates.Items, orders.Items)
	return report, errors.Join(errs...)
}

// buildStatus makes the report of what was read, at now. namespace, when
// set, keeps only the requests for pods of that namespace.
func buildStatus(now time.Time, namespace string, issuers []v1alpha1.GenericIssuer, csrs []certificatesv1.CertificateSigningRequest,
	certificates []v1alpha1.Certificate, orders []v1alpha1.Order) *StatusReport {
	r := &StatusReport{
		Issuers: []IssuerStatus{}, Requests: []RequestStatus{}, Certificates: []CertificateStatus{}, Orders: []OrderStatus{},
		now: now,
	}
	for _, iss := range issuers {
		r.Issuers = append(r.Issuers, issuerStatus(iss, now))
	}
	for i := range csrs {
		if s, ok := requestStatus(&csrs[i], namespace, now); ok {
			r.Requests = append(r.Requests, s)
		}
	}
	for i := range certificates {
		if s, ok := certificateStatus(&certificates[i]); ok {
			r.Certificates = append(r.Certificates, s)
		}
	}
	for i := range orders {
		if s, ok := orderStatus(&orders[i]); ok {
			r.Orders = append(r.Orders, s)
		}
	}
	slices.SortFunc(r.Issuers, func(a, b IssuerStatus) int {
		// ClusterIssuers first, as they serve every namespace.
		return cmp.Or(cmp.Compare(a.Issuer.Kind, b.Issuer.Kind), cmp.Compare(a.Issuer.Namespace, b.Issuer.Namespace), cmp.Compare(a.Issuer.Name, b.Issuer.Name))
	})
	slices.SortFunc(r.Requests, func(a, b RequestStatus) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(r.Certificates, func(a, b CertificateStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(r.Orders, func(a, b OrderStatus) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	r.Healthy = r.countProblems() == 0
	return r
}

func (r *StatusReport) countProblems() int {
	n := len(r.Certificates)
	for _, i := range r.Issuers {
		if i.Problem != "" {
			n++
		}
	}
	for _, q := range r.Requests {
		if q.Problem != "" {
			n++
		}
	}
	for _, o := range r.Orders {
		if o.Problem != "" {
			n++
		}
	}
	return n
}

func (r *StatusReport) healthy() bool { return r.Healthy }

func issuerStatus(iss v1alpha1.GenericIssuer, now time.Time) IssuerStatus {
	kind := request.KindIssuer
	if _, ok := iss.(*v1alpha1.ClusterIssuer); ok {
		kind = request.KindClusterIssuer
	}
	st := iss.GetStatus()
	out := IssuerStatus{
		Issuer: issuerOf(request.IssuerRef{Kind: kind, Namespace: iss.GetNamespace(), Name: iss.GetName()}),
		Ready:  string(metav1.ConditionUnknown),
	}
	if st.ReissueBefore != nil {
		t := st.ReissueBefore.UTC()
		out.ReissueBefore = &t
	}
	if cond := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReady); cond != nil {
		out.Ready, out.Reason, out.Message = string(cond.Status), cond.Reason, cond.Message
	}
	var retiring []*x509.Certificate
	for _, rc := range st.RetiringCAs {
		certs, err := pki.ParseCertificates([]byte(rc.Certificate))
		if err != nil {
			continue
		}
		retiring = append(retiring, certs...)
		out.RetiringCAs = append(out.RetiringCAs, RetiringCA{Subject: certs[0].Subject.String(), Until: rc.Until.UTC()})
	}
	if bundle, err := pki.ParseCertificates([]byte(st.TrustBundle)); err == nil {
		for _, c := range bundle {
			if slices.ContainsFunc(retiring, c.Equal) {
				continue
			}
			if out.CANotAfter == nil || c.NotAfter.Before(*out.CANotAfter) {
				t := c.NotAfter.UTC()
				out.CANotAfter = &t
			}
		}
	}
	switch {
	case out.Ready != string(metav1.ConditionTrue) && out.Reason == "":
		out.Problem = "not Ready: the controller has not reported on it"
	case out.Ready != string(metav1.ConditionTrue):
		out.Problem = "not Ready: " + out.Reason
	case out.CANotAfter != nil && !now.Before(*out.CANotAfter):
		out.Problem = "its CA has expired"
	}
	return out
}

// requestStatus is csr's row, if it is certmint's, for a pod of namespace
// (any when empty), and not issued.
func requestStatus(csr *certificatesv1.CertificateSigningRequest, namespace string, now time.Time) (RequestStatus, bool) {
	ref, ok := request.ParseSignerName(csr.Spec.SignerName)
	if !ok {
		return RequestStatus{}, false
	}
	if namespace != "" && csr.Annotations[request.AnnotationPodNamespace] != namespace {
		return RequestStatus{}, false
	}
	state, cond := requestState(csr)
	if state == stateIssued {
		return RequestStatus{}, false
	}
	out := RequestStatus{
		Name: csr.Name, Issuer: issuerOf(ref), Pod: podOf(csr), Node: csr.Labels[request.LabelNode],
		State: state, Created: csr.CreationTimestamp.UTC(),
	}
	if cond != nil {
		out.Reason, out.Message = cond.Reason, cond.Message
	}
	switch {
	case state == stateDenied || state == stateFailed:
		out.Problem = state
	case now.Sub(out.Created) > StuckAfter:
		out.Problem = "stuck: " + state + " for " + duration.HumanDuration(now.Sub(out.Created))
	}
	return out, true
}

// certificateStatus is cert's row if it is not Ready.
func certificateStatus(cert *v1alpha1.Certificate) (CertificateStatus, bool) {
	cond := meta.FindStatusCondition(cert.Status.Conditions, v1alpha1.ConditionReady)
	if cond != nil && cond.Status == metav1.ConditionTrue {
		return CertificateStatus{}, false
	}
	kind := request.KindIssuer
	if cert.Spec.IssuerRef.Kind == string(request.KindClusterIssuer) {
		kind = request.KindClusterIssuer
	}
	ref := request.IssuerRef{Kind: kind, Name: cert.Spec.IssuerRef.Name}
	if kind == request.KindIssuer {
		ref.Namespace = cert.Namespace
	}
	out := CertificateStatus{Namespace: cert.Namespace, Name: cert.Name, Issuer: issuerOf(ref), Message: "the controller has not reported on it"}
	if cond != nil {
		out.Reason, out.Message = cond.Reason, cond.Message
	}
	if cert.Status.NotAfter != nil {
		t := cert.Status.NotAfter.UTC()
		out.NotAfter = &t
	}
	return out, true
}

// orderStatus is order's row if it is not valid.
func orderStatus(order *v1alpha1.Order) (OrderStatus, bool) {
	if order.Status.State == v1alpha1.ACMEStateValid {
		return OrderStatus{}, false
	}
	out := OrderStatus{
		Namespace: order.Namespace, Name: order.Name,
		Issuer: issuerOf(request.IssuerRef{Kind: request.KindClusterIssuer, Name: order.Spec.IssuerName}),
		For:    order.Spec.Request.Kind + "/" + order.Spec.Request.Name,
		State:  order.Status.State, Reason: order.Status.Reason, Message: order.Status.Message,
		Created: order.CreationTimestamp.UTC(),
	}
	if out.State == "" {
		out.State = v1alpha1.ACMEStatePending
	}
	if out.State == v1alpha1.ACMEStateInvalid {
		out.Problem = "invalid"
	}
	return out, true
}

func (r *StatusReport) writeTable(t *textWriter) {
	t.row("ISSUER", "READY", "REASON", "CA EXPIRES", "RETIRING CAS", "MESSAGE")
	for _, i := range r.Issuers {
		expires, retiring := "-", "-"
		if i.CANotAfter != nil {
			expires = fmt.Sprintf("%s (%s)", i.CANotAfter.Format(time.RFC3339), relative(r.now, *i.CANotAfter))
		}
		if len(i.RetiringCAs) > 0 {
			first := slices.MinFunc(i.RetiringCAs, func(a, b RetiringCA) int { return a.Until.Compare(b.Until) })
			retiring = fmt.Sprintf("%d, first leaves %s", len(i.RetiringCAs), first.Until.Format(time.RFC3339))
		}
		t.row(i.Issuer.String(), i.Ready, orDash(i.Reason), expires, retiring, orDash(i.Message))
	}
	if len(r.Issuers) == 0 {
		t.printf("(no issuers)\n")
	}
	t.printf("\n")
	t.row("REQUEST", "ISSUER", "POD", "NODE", "STATE", "REASON", "AGE", "MESSAGE")
	for _, q := range r.Requests {
		t.row(q.Name, q.Issuer.String(), orDash(q.Pod), orDash(q.Node), q.State, orDash(q.Reason), duration.HumanDuration(r.now.Sub(q.Created)), orDash(q.Message))
	}
	if len(r.Requests) == 0 {
		t.printf("(no request pending, denied or failed)\n")
	}
	if len(r.Certificates) > 0 {
		t.printf("\n")
		t.row("CERTIFICATE NOT READY", "ISSUER", "REASON", "NOT AFTER", "MESSAGE")
		for _, c := range r.Certificates {
			notAfter := "-"
			if c.NotAfter != nil {
				notAfter = c.NotAfter.Format(time.RFC3339)
			}
			t.row(c.Namespace+"/"+c.Name, c.Issuer.String(), orDash(c.Reason), notAfter, orDash(c.Message))
		}
	}
	if len(r.Orders) > 0 {
		t.printf("\n")
		t.row("ORDER NOT VALID", "ISSUER", "FOR", "STATE", "REASON", "AGE", "MESSAGE")
		for _, o := range r.Orders {
			t.row(o.Namespace+"/"+o.Name, o.Issuer.String(), o.For, o.State, orDash(o.Reason), duration.HumanDuration(r.now.Sub(o.Created)), orDash(o.Message))
		}
	}
	if n := r.countProblems(); n > 0 {
		t.printf("\n%d need(s) attention.\n", n)
	}
}

// relative says how far t is from now: "in 4y", "3d ago".
func relative(now, t time.Time) string {
	if t.Before(now) {
		return duration.HumanDuration(now.Sub(t)) + " ago"
	}
	return "in " + duration.HumanDuration(t.Sub(now))
}
