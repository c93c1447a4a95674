package kubectlcertmint

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

// RenewIssuerOptions choose the issuer to renew.
type RenewIssuerOptions struct {
	Issuer request.IssuerRef
}

// RenewPodOptions choose the pod whose certificates to renew.
type RenewPodOptions struct {
	Namespace, Pod string
	// WholeIssuer consents to re-issuing every certificate of each of the
	// pod's issuers, the only way there is; without it RenewPod refuses.
	WholeIssuer bool
}

// RenewReport says which issuers were asked to re-issue, and from when.
type RenewReport struct {
	Issuers []RenewedIssuer `json:"issuers"`
}

// RenewedIssuer is one issuer asked to re-issue.
type RenewedIssuer struct {
	Issuer Issuer `json:"issuer"`
	// ReissueBefore is the issuer's status.reissueBefore now: certificates
	// requested before it are re-issued.
	ReissueBefore time.Time `json:"reissueBefore"`
	// Previous is the reissueBefore it had, if any.
	Previous *time.Time `json:"previous,omitempty"`
	// Unchanged: it already asked for every certificate requested before
	// the API server's present second, so nothing was written.
	Unchanged bool `json:"unchanged,omitempty"`
}

func (r *RenewReport) healthy() bool { return true }

func (r *RenewReport) writeTable(t *textWriter) {
	t.row("ISSUER", "REISSUE BEFORE", "PREVIOUS")
	for _, i := range r.Issuers {
		prev := "-"
		if i.Previous != nil {
			prev = i.Previous.Format(time.RFC3339)
		}
		t.row(i.Issuer.String(), i.ReissueBefore.Format(time.RFC3339), prev)
	}
	t.printf("\nEvery certificate requested before that time is re-issued: by each node's driver at a random time within its\n" +
		"--reissue-spread (30s by default), and a Certificate's Secret on its next reconcile. Pods keep their files until then.\n")
}

// RenewIssuer asks the drivers to re-issue every certificate of an issuer
// requested before now, and the controller to re-issue its Certificates,
// by setting the issuer's status.reissueBefore to the API server's time:
// the mechanism the controller itself uses after a CA rotation. It never
// moves reissueBefore back.
func RenewIssuer(ctx context.Context, env *Env, opts RenewIssuerOptions) (*RenewReport, error) {
	renewed, err := renewIssuer(ctx, env, opts.Issuer)
	if err != nil {
		return nil, err
	}
	return &RenewReport{Issuers: []RenewedIssuer{renewed}}, nil
}

func renewIssuer(ctx context.Context, env *Env, ref request.IssuerRef) (RenewedIssuer, error) {
	if env.ServerClock == nil {
		return RenewedIssuer{}, errors.New("renew needs the API server's clock")
	}
	var out RenewedIssuer
	// The resourceVersion in the patch makes it conditional: an issuer
	// whose status moved on since it was read (the controller rotated its
	// CA, say) is read again, so a later reissueBefore is never replaced
	// by an earlier one.
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		out = RenewedIssuer{Issuer: issuerOf(ref)}
		u, iss, err := getIssuer(ctx, env.Dynamic, ref)
		if err != nil {
			return err
		}
		if err := readyToSign(iss); err != nil {
			return fmt.Errorf("%s %w", ref, err)
		}
		now, err := env.ServerClock.Now(ctx)
		if err != nil {
			return err
		}
		now = now.Truncate(time.Second).UTC()
		if prev := iss.GetStatus().ReissueBefore; prev != nil {
			p := prev.UTC()
			out.Previous = &p
			if !now.After(p) {
				out.ReissueBefore, out.Unchanged = p, true
				return nil
			}
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": u.GetResourceVersion()},
			"status":   map[string]any{"reissueBefore": metav1.NewTime(now)},
		})
		if err != nil {
			return err
		}
		if _, err := issuerClient(env.Dynamic, ref).Patch(ctx, ref.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldManager}, "status"); err != nil {
			return fmt.Errorf("setting status.reissueBefore of %s: %w", ref, err)
		}
		out.ReissueBefore = now
		return nil
	})
	return out, err
}

// readyToSign refuses an issuer that is not Ready: what it was asked to
// re-issue would only fail to renew, pod by pod.
func readyToSign(iss v1alpha1.GenericIssuer) error {
	cond := meta.FindStatusCondition(iss.GetStatus().Conditions, v1alpha1.ConditionReady)
	switch {
	case cond == nil:
		return errors.New("is not Ready yet (no Ready condition: is the controller running?); its certificates cannot be re-issued")
	case cond.Status != metav1.ConditionTrue:
		return fmt.Errorf("is not Ready (%s: %s); its certificates cannot be re-issued until it is", cond.Reason, cond.Message)
	}
	return nil
}

// RenewPod re-issues a pod's certificates the only way certmint can: by
// asking each of the pod's issuers to re-issue all of theirs. The driver
// has no per-volume or per-pod request to re-issue, so RenewPod refuses
// unless the caller consents to that (WholeIssuer); recreating the pod is
// the way to replace its certificates alone.
func RenewPod(ctx context.Context, env *Env, opts RenewPodOptions) (*RenewReport, error) {
	pod, err := env.Kube.CoreV1().Pods(opts.Namespace).Get(ctx, opts.Pod, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading pod %s/%s: %w", opts.Namespace, opts.Pod, err)
	}
	volumes := certmintVolumes(pod)
	if len(volumes) == 0 {
		return nil, fmt.Errorf("pod %s/%s has no %s volume", opts.Namespace, opts.Pod, request.DriverName)
	}
	var issuers []request.IssuerRef
	for _, v := range volumes {
		if v.issuer.Name != "" && !slices.Contains(issuers, v.issuer) {
			issuers = append(issuers, v.issuer)
		}
	}
	if len(issuers) == 0 {
		return nil, fmt.Errorf("no volume of pod %s/%s names an issuer", opts.Namespace, opts.Pod)
	}
	if !opts.WholeIssuer {
		names := make([]string, len(issuers))
		for i, ref := range issuers {
			names[i] = ref.String()
		}
		return nil, fmt.Errorf("certmint cannot re-issue one pod's certificates: drivers re-issue early only what an issuer asks back, "+
			"every certificate it issued before a time. Pod %s/%s has its certificates from %s. "+
			"Run again with --whole-issuer to re-issue every certificate of %s, on every node, within each driver's --reissue-spread; "+
			"or recreate the pod to replace its certificates alone",
			opts.Namespace, opts.Pod, strings.Join(names, ", "), strings.Join(names, " and "))
	}
	report := &RenewReport{}
	for _, ref := range issuers {
		renewed, err := renewIssuer(ctx, env, ref)
		if err != nil {
			return report, err
		}
		report.Issuers = append(report.Issuers, renewed)
	}
	return report, nil
}
