package kubectlcertmint

import (
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func (f *fakes) csr(t *testing.T, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	csr, err := f.kube.CertificatesV1().CertificateSigningRequests().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func TestApproveApprovesAPendingRequestAndSaysThePolicyStillHolds(t *testing.T) {
	f := newFakes(t, []runtime.Object{certmintCSR("csr-1", mesh, "shop/web-0", "node-a", time.Minute)})
	code, out, errOut := f.run(t, "approve", "csr-1")
	want := `NAME   ISSUER              POD         DECISION
csr-1  ClusterIssuer mesh  shop/web-0  Approved

The controller still checks the issuer's policy when it signs: an approval cannot widen what the issuer grants,
and a request the policy refuses is marked Failed with the policy's reason.
`
	if code != ExitOK || out != want || errOut != "" {
		t.Errorf("exit %d, stdout\n%s\nstderr %q; want 0 and\n%s", code, out, errOut, want)
	}
	conds := f.csr(t, "csr-1").Status.Conditions
	if len(conds) != 1 || conds[0].Type != certificatesv1.CertificateApproved || conds[0].Reason != ReasonApproved ||
		conds[0].Message != "Approved with kubectl certmint approve" || !conds[0].LastUpdateTime.Time.Equal(now) {
		t.Errorf("conditions %+v, want one Approved by the plugin", conds)
	}
	if w := f.writes(); len(w) != 1 || w[0] != "update certificatesigningrequests/approval" {
		t.Errorf("writes %v, want one through the approval subresource", w)
	}
}

func TestDenyDeniesPendingRequestsWithTheReasonGiven(t *testing.T) {
	f := newFakes(t, []runtime.Object{
		certmintCSR("csr-1", mesh, "shop/web-0", "node-a", time.Minute),
		certmintCSR("csr-2", shopCA, "shop/web-1", "node-b", time.Minute),
	})
	code, out, errOut := f.run(t, "deny", "csr-1", "csr-2", "--reason", "not this week")
	want := `NAME   ISSUER              POD         DECISION
csr-1  ClusterIssuer mesh  shop/web-0  Denied
csr-2  Issuer shop/ca      shop/web-1  Denied
`
	if code != ExitOK || out != want || errOut != "" {
		t.Errorf("exit %d, stdout\n%s\nstderr %q; want 0 and\n%s", code, out, errOut, want)
	}
	for _, name := range []string{"csr-1", "csr-2"} {
		conds := f.csr(t, name).Status.Conditions
		if len(conds) != 1 || conds[0].Type != certificatesv1.CertificateDenied || conds[0].Reason != ReasonDenied || conds[0].Message != "not this week" {
			t.Errorf("%s: conditions %+v, want Denied with the reason given", name, conds)
		}
	}
}

func TestADecisionAlreadyMadeIsKept(t *testing.T) {
	approved := certmintCSR("approved", mesh, "shop/web-0", "node-a", time.Minute, csrCondition(certificatesv1.CertificateApproved, "Allowed", ""))
	denied := certmintCSR("denied", mesh, "shop/web-0", "node-a", time.Minute, csrCondition(certificatesv1.CertificateDenied, "NameNotAllowed", "no"))
	issued := certmintCSR("issued", mesh, "shop/web-0", "node-a", time.Minute, csrCondition(certificatesv1.CertificateApproved, "Allowed", ""))
	issued.Status.Certificate = []byte("issued")
	failed := certmintCSR("failed", mesh, "shop/web-0", "node-a", time.Minute,
		csrCondition(certificatesv1.CertificateApproved, "Allowed", ""), csrCondition(certificatesv1.CertificateFailed, "NameNotAllowed", "no"))
	foreign := certmintCSR("foreign", mesh, "shop/web-0", "node-a", time.Minute)
	foreign.Spec.SignerName = "kubernetes.io/kube-apiserver-client"
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"approving an approved request does nothing", []string{"approve", "approved"}, ExitOK, "Approved (already)"},
		{"denying a denied request does nothing", []string{"deny", "denied", "--reason", "x"}, ExitOK, "Denied (already)"},
		{"an approved request cannot be denied", []string{"deny", "approved", "--reason", "x"}, ExitError, "CertificateSigningRequest approved is Approved already; only a pending request can be Denied"},
		{"a denied request cannot be approved", []string{"approve", "denied"}, ExitError, "is Denied already"},
		{"an issued request cannot be denied", []string{"deny", "issued", "--reason", "x"}, ExitError, "is Issued already"},
		{"a failed request cannot be approved", []string{"approve", "failed"}, ExitError, "is Failed already"},
		{"another signer's request is refused", []string{"approve", "foreign"}, ExitError,
			"CertificateSigningRequest foreign is for signer kubernetes.io/kube-apiserver-client, not a certmint issuer: use kubectl certificate approve|deny"},
		{"a request that does not exist", []string{"approve", "gone"}, ExitError, `certificatesigningrequests.certificates.k8s.io "gone" not found`},
		{"deny without a reason", []string{"deny", "denied"}, ExitError, "deny needs --reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakes(t, []runtime.Object{approved, denied, issued, failed, foreign})
			code, out, errOut := f.run(t, tc.args...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) || len(f.writes()) != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q, writes %v; want %d, %q, nothing written", code, out, errOut, f.writes(), tc.code, tc.want)
			}
		})
	}
}

func TestDecideStopsAtTheFirstRequestItCannotDecide(t *testing.T) {
	foreign := certmintCSR("foreign", mesh, "shop/web-0", "node-a", time.Minute)
	foreign.Spec.SignerName = "example.com/signer"
	f := newFakes(t, []runtime.Object{certmintCSR("csr-1", mesh, "shop/web-0", "node-a", time.Minute), foreign, certmintCSR("csr-3", mesh, "shop/web-1", "node-a", time.Minute)})
	code, out, _ := f.run(t, "approve", "csr-1", "foreign", "csr-3")
	if code != ExitError || !strings.Contains(out, "csr-1") || strings.Contains(out, "csr-3") || len(f.csr(t, "csr-3").Status.Conditions) != 0 {
		t.Errorf("exit %d, stdout\n%s\nwant %d, csr-1 approved and reported, csr-3 untouched", code, out, ExitError)
	}
}
