package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// secretsPolicyWait is how long checkSecretsPolicy gives an API server to
// load a policy installed with the controller.
const secretsPolicyWait = time.Minute

// checkSecretsPolicy makes sure the controller cannot mint a
// ServiceAccount token. It may create Secrets in every namespace, for
// Certificates, and read every Secret; only the ValidatingAdmissionPolicy
// installed with it (deploy/rbac/controller-secrets-policy.yaml) keeps it
// from creating a token Secret and reading the token back. A controller
// whose policy is missing, or does not match it (say, a ServiceAccount
// renamed by an overlay), refuses to run instead. The check is a dry run:
// nothing is stored.
func checkSecretsPolicy(ctx context.Context, c client.Client, namespace string) error {
	probe := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   namespace,
			Name:        "certmint-secrets-policy-check",
			Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"},
		},
		Type: corev1.SecretTypeServiceAccountToken,
	}
	var last error
	err := wait.PollUntilContextTimeout(ctx, time.Second, secretsPolicyWait, true, func(ctx context.Context) (bool, error) {
		last = c.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		switch {
		case last == nil:
			// Accepted: the policy is not (yet) in force.
			return false, nil
		case apierrors.IsForbidden(last) || apierrors.IsInvalid(last):
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		why := "the API server would let it create a ServiceAccount token Secret"
		if last != nil {
			why = "checking that it cannot create a ServiceAccount token Secret failed: " + last.Error()
		}
		return fmt.Errorf("refusing to run: %s. Install the ValidatingAdmissionPolicy of deploy/rbac/controller-secrets-policy.yaml "+
			"(or the Helm chart's), matching this controller's ServiceAccount, or run with --require-secrets-policy=false "+
			"where nothing else keeps it from minting tokens", why)
	}
	return nil
}
