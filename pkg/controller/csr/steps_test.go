package csr

import (
	"errors"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"

	"github.com/certmint/certmint/pkg/controller/metrics"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/policy"
)

const grace = time.Hour

// wantStep is what a test expects of a step; zero fields expect nothing.
type wantStep struct {
	condition   certificatesv1.RequestConditionType
	reason      string
	certificate bool
	sign        bool
	event       string
	result      string
	requeue     time.Duration
	err         bool
}

func checkStep(t *testing.T, got step, want wantStep) {
	t.Helper()
	var cond certificatesv1.RequestConditionType
	var reason string
	if got.condition != nil {
		cond, reason = got.condition.Type, got.condition.Reason
	}
	var event string
	if got.event != nil {
		event = got.event.reason
	}
	switch {
	case cond != want.condition || reason != want.reason:
		t.Errorf("condition %q %q, want %q %q", cond, reason, want.condition, want.reason)
	case (got.certificate != nil) != want.certificate:
		t.Errorf("certificate written: %v, want %v", got.certificate != nil, want.certificate)
	case got.sign != want.sign:
		t.Errorf("sign %v, want %v", got.sign, want.sign)
	case event != want.event:
		t.Errorf("event %q, want %q", event, want.event)
	case got.result != want.result:
		t.Errorf("metric result %q, want %q", got.result, want.result)
	case got.requeue != want.requeue:
		t.Errorf("requeue after %s, want %s", got.requeue, want.requeue)
	case (got.err != nil) != want.err:
		t.Errorf("err %v, want an error: %v", got.err, want.err)
	}
}

func TestDecideStep(t *testing.T) {
	allowed := policy.Decision{Allowed: true, Reason: policy.ReasonApproved, Message: "pod shop/web-0 on node node-a", Duration: time.Hour}
	denied := policy.Decision{Reason: policy.ReasonNameNotAllowed, Message: "DNS name not allowed"}
	for _, c := range []struct {
		name           string
		approvedBefore bool
		issuerReady    bool
		decision       policy.Decision
		want           wantStep
	}{
		{name: "a new request the policy allows, for a Ready issuer, is approved and signed in the same pass",
			issuerReady: true, decision: allowed,
			want: wantStep{condition: certificatesv1.CertificateApproved, reason: policy.ReasonApproved, sign: true, result: metrics.ResultApproved}},
		{name: "a new request the policy denies is denied with its reason, which its pod is told",
			issuerReady: true, decision: denied,
			want: wantStep{condition: certificatesv1.CertificateDenied, reason: policy.ReasonNameNotAllowed, event: policy.ReasonNameNotAllowed, result: metrics.ResultDenied, requeue: grace}},
		{name: "a denial does not wait for the issuer",
			decision: denied,
			want:     wantStep{condition: certificatesv1.CertificateDenied, reason: policy.ReasonNameNotAllowed, event: policy.ReasonNameNotAllowed, result: metrics.ResultDenied, requeue: grace}},
		{name: "a new request the policy allows waits for an issuer that is not Ready, and its pod is told",
			decision: allowed,
			want:     wantStep{event: issuer.ReasonIssuerNotReady, requeue: issuer.IssuerWait}},
		{name: "an approved request waits quietly for an issuer that is not Ready",
			approvedBefore: true, decision: allowed,
			want: wantStep{requeue: issuer.IssuerWait}},
		{name: "an approved request the policy refuses fails with the policy's reason",
			approvedBefore: true, issuerReady: true, decision: denied,
			want: wantStep{condition: certificatesv1.CertificateFailed, reason: policy.ReasonNameNotAllowed, event: policy.ReasonNameNotAllowed, result: metrics.ResultFailed, requeue: grace}},
		{name: "an approved request the policy allows is signed without a second approval",
			approvedBefore: true, issuerReady: true, decision: allowed,
			want: wantStep{sign: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkStep(t, decideStep("csr-1", c.approvedBefore, c.issuerReady, c.decision, grace), c.want)
		})
	}
}

func TestSignStep(t *testing.T) {
	for _, c := range []struct {
		name string
		res  issuer.Result
		want wantStep
	}{
		{name: "a signed chain is written into the request",
			res:  issuer.Result{Outcome: issuer.Issued, Chain: []byte("chain")},
			want: wantStep{certificate: true, result: metrics.ResultSigned, requeue: grace}},
		{name: "a permanent failure fails the request with the backend's reason",
			res:  issuer.Result{Outcome: issuer.Fail, Reason: issuer.ReasonSigningFailed, Message: "refused"},
			want: wantStep{condition: certificatesv1.CertificateFailed, reason: issuer.ReasonSigningFailed, event: issuer.ReasonSigningFailed, result: metrics.ResultFailed, requeue: grace}},
		{name: "a backend still working is asked again when it said",
			res:  issuer.Result{Outcome: issuer.Wait, RetryAfter: 7 * time.Second},
			want: wantStep{requeue: 7 * time.Second}},
		{name: "an issuer that cannot sign now is waited for",
			res:  issuer.Result{Outcome: issuer.WaitForIssuer, RetryAfter: issuer.IssuerWait},
			want: wantStep{requeue: issuer.IssuerWait}},
		{name: "a transient error is retried with backoff",
			res:  issuer.Result{Outcome: issuer.Retry, Err: errors.New("connection refused")},
			want: wantStep{err: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkStep(t, signStep("csr-1", c.res, grace), c.want)
		})
	}
}
