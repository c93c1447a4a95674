package kubectlcertmint

import (
	"context"
	"fmt"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/certmint/certmint/pkg/request"
)

// Reasons of the conditions the plugin writes, in the form kubectl's own
// certificate approve and deny use.
const (
	ReasonApproved = "KubectlCertmintApprove"
	ReasonDenied   = "KubectlCertmintDeny"
)

// approvalNote is said of every approval: it is not the last word.
const approvalNote = "The controller still checks the issuer's policy when it signs: an approval cannot widen what the issuer grants,\n" +
	"and a request the policy refuses is marked Failed with the policy's reason."

// DecideOptions choose the requests to approve or deny, and why.
type DecideOptions struct {
	Names   []string
	Approve bool
	// Reason is the condition's message; deny requires one.
	Reason string
}

// DecideReport says what became of each request.
type DecideReport struct {
	Requests []Decided `json:"requests"`
	approve  bool
}

// Decided is one request approved or denied.
type Decided struct {
	Name   string `json:"name"`
	Issuer Issuer `json:"issuer"`
	// Pod is namespace/name of the pod the request names, if any.
	Pod string `json:"pod,omitempty"`
	// Decision is Approved or Denied.
	Decision string `json:"decision"`
	// Already: the request had that decision before; nothing was written.
	Already bool `json:"already,omitempty"`
}

func (r *DecideReport) healthy() bool { return true }

func (r *DecideReport) writeTable(t *textWriter) {
	t.row("NAME", "ISSUER", "POD", "DECISION")
	for _, d := range r.Requests {
		decision := d.Decision
		if d.Already {
			decision += " (already)"
		}
		t.row(d.Name, d.Issuer.String(), orDash(d.Pod), decision)
	}
	if r.approve {
		t.printf("\n%s\n", approvalNote)
	}
}

// Decide approves or denies pending certmint requests through the approval
// subresource, as kubectl certificate approve|deny does. It refuses
// requests to other signers, and requests that are decided otherwise
// already, issued or failed; a request already decided the same way is
// left as it is. It stops at the first request it cannot decide.
func Decide(ctx context.Context, env *Env, opts DecideOptions) (*DecideReport, error) {
	report := &DecideReport{approve: opts.Approve}
	for _, name := range opts.Names {
		d, err := decide(ctx, env, name, opts)
		if err != nil {
			return report, err
		}
		report.Requests = append(report.Requests, d)
	}
	return report, nil
}

func decide(ctx context.Context, env *Env, name string, opts DecideOptions) (Decided, error) {
	want, reason, message := certificatesv1.CertificateApproved, ReasonApproved, "Approved with kubectl certmint approve"
	if !opts.Approve {
		want, reason, message = certificatesv1.CertificateDenied, ReasonDenied, ""
	}
	if opts.Reason != "" {
		message = opts.Reason
	}
	var out Decided
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		csrs := env.Kube.CertificatesV1().CertificateSigningRequests()
		csr, err := csrs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading CertificateSigningRequest %s: %w", name, err)
		}
		ref, ok := request.ParseSignerName(csr.Spec.SignerName)
		if !ok {
			return fmt.Errorf("CertificateSigningRequest %s is for signer %s, not a certmint issuer: use kubectl certificate approve|deny", name, csr.Spec.SignerName)
		}
		out = Decided{Name: name, Issuer: issuerOf(ref), Pod: podOf(csr), Decision: string(want)}
		switch state, _ := requestState(csr); state {
		case string(want):
			out.Already = true
			return nil
		case statePending:
		default:
			return fmt.Errorf("CertificateSigningRequest %s is %s already; only a pending request can be %s", name, state, want)
		}
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: want, Status: corev1.ConditionTrue, Reason: reason, Message: message,
			LastUpdateTime: metav1.NewTime(env.clock().Now()),
		})
		if _, err := csrs.UpdateApproval(ctx, name, csr, metav1.UpdateOptions{FieldManager: fieldManager}); err != nil {
			return fmt.Errorf("writing the %s condition of CertificateSigningRequest %s: %w", want, name, err)
		}
		return nil
	})
	if err != nil {
		return Decided{}, err
	}
	return out, nil
}

// The states of a request, as status reports them.
const (
	statePending = "Pending"
	// stateApprovedUnsigned: approved, waiting for its certificate.
	stateApprovedUnsigned = "Approved"
	stateDenied           = "Denied"
	stateFailed           = "Failed"
	stateIssued           = "Issued"
)

// requestState is where csr stands, and the condition that says so.
func requestState(csr *certificatesv1.CertificateSigningRequest) (string, *certificatesv1.CertificateSigningRequestCondition) {
	find := func(t certificatesv1.RequestConditionType) *certificatesv1.CertificateSigningRequestCondition {
		for i := range csr.Status.Conditions {
			if c := &csr.Status.Conditions[i]; c.Type == t && c.Status == corev1.ConditionTrue {
				return c
			}
		}
		return nil
	}
	switch {
	case find(certificatesv1.CertificateFailed) != nil:
		return stateFailed, find(certificatesv1.CertificateFailed)
	case find(certificatesv1.CertificateDenied) != nil:
		return stateDenied, find(certificatesv1.CertificateDenied)
	case len(csr.Status.Certificate) > 0:
		return stateIssued, nil
	case find(certificatesv1.CertificateApproved) != nil:
		return stateApprovedUnsigned, find(certificatesv1.CertificateApproved)
	}
	return statePending, nil
}

// podOf is namespace/name of the pod a driver's request names.
func podOf(csr *certificatesv1.CertificateSigningRequest) string {
	ns, name := csr.Annotations[request.AnnotationPodNamespace], csr.Annotations[request.AnnotationPodName]
	if ns == "" || name == "" {
		return ""
	}
	return ns + "/" + name
}
