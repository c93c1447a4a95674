package controller_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/controller/trustbundle"
	"github.com/certmint/certmint/pkg/issuer"
)

// TestTrustBundlesArePublishedAsClusterTrustBundles checks that every
// issuer's trust bundle is a ClusterTrustBundle for its signer, kept equal
// to its status.trustBundle through a rotation, hand edits and deletions,
// and removed with the issuer, even one deleted while no controller ran;
// that ClusterTrustBundles without certmint's label are never touched;
// and that a bundle the API cannot take is reported on its issuer.
func TestTrustBundlesArePublishedAsClusterTrustBundles(t *testing.T) {
	e := requireEnv(t)
	testT := t
	controller := startController(t, "trust-bundles")
	ns := uniqueName("trust-bundles")
	if err := e.ensureServiceAccount(t.Context(), ns, "default"); err != nil {
		t.Fatal(err)
	}

	clusterIssuer := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-ca"},
		Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: ns + "-ca"}},
	}
	createTLSSecret(t, certmintNS, clusterIssuer.Name, caSecretData(t, nil))
	if err := e.admin.Create(t.Context(), clusterIssuer); err != nil {
		t.Fatal(err)
	}
	createTLSSecret(t, ns, "ca", caSecretData(t, nil))
	nsIssuer := createCAIssuer(t, ns, "ca", "ca", nil)
	waitReady(t, clusterIssuer, metav1.ConditionTrue, v1alpha1.ReasonReady)
	waitReady(t, nsIssuer, metav1.ConditionTrue, v1alpha1.ReasonReady)

	// Bundles of certmint's signers that are not certmint's: one beside
	// the Issuer's, and one with the name an issuer created later wants.
	foreign := createForeignBundle(t, "issuers.certmint.io:"+ns+".ca:foreign", issuer.RefFor(nsIssuer).SignerName())
	takenRef := issuer.RefFor(&v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "taken"}})
	taken := createForeignBundle(t, trustbundle.Name(takenRef), takenRef.SignerName())

	t.Run("a CA ClusterIssuer and an Issuer each get a ClusterTrustBundle of their status.trustBundle", func(t *testing.T) {
		for _, iss := range []v1alpha1.GenericIssuer{clusterIssuer, nsIssuer} {
			ctb := waitForPublished(t, iss)
			ref := issuer.RefFor(iss)
			if ctb.Spec.SignerName != ref.SignerName() {
				t.Errorf("%s: signer %q, want %q", ref, ctb.Spec.SignerName, ref.SignerName())
			}
			if ctb.Labels[trustbundle.LabelManagedBy] != trustbundle.ManagedBy {
				t.Errorf("%s: labels %v, want %s=%s", ref, ctb.Labels, trustbundle.LabelManagedBy, trustbundle.ManagedBy)
			}
			certs := certsIn(t, []byte(ctb.Spec.TrustBundle))
			if len(certs) != 1 || !certs[0].IsCA || !certs[0].BasicConstraintsValid {
				t.Errorf("%s: the bundle holds %d certificates, want its one CA", ref, len(certs))
			}
		}
	})

	t.Run("after a CA rotation the bundle carries the old and the new CA", func(t *testing.T) {
		oldCA := certsIn(t, []byte(nsIssuer.Status.TrustBundle))[0]
		newData := caSecretData(t, nil)
		newCA := certsIn(t, newData[corev1.TLSCertKey])[0]
		var secret corev1.Secret
		if err := e.admin.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "ca"}, &secret); err != nil {
			t.Fatal(err)
		}
		secret.Data = newData
		if err := e.admin.Update(t.Context(), &secret); err != nil {
			t.Fatal(err)
		}
		waitForIssuer(t, nsIssuer, "the new CA to sign while the old one retires", func(st *v1alpha1.IssuerStatus) bool {
			return len(st.RetiringCAs) == 1 && st.Signing != nil && st.Signing.CAFingerprint == certFingerprint(newCA)
		})
		ctb := waitForPublished(t, nsIssuer)
		certs := certsIn(t, []byte(ctb.Spec.TrustBundle))
		if len(certs) != 2 || !slices.ContainsFunc(certs, oldCA.Equal) || !slices.ContainsFunc(certs, newCA.Equal) {
			t.Errorf("the bundle holds %d certificates, want the new and the old CA", len(certs))
		}
	})

	t.Run("a bundle deleted by hand comes back", func(t *testing.T) {
		ctb := getBundle(t, trustbundle.Name(issuer.RefFor(nsIssuer)))
		if err := e.admin.Delete(t.Context(), ctb); err != nil {
			t.Fatal(err)
		}
		waitForBundle(t, ctb.Name, "the deleted bundle to be published again", func(got *certificatesv1.ClusterTrustBundle) bool {
			return got != nil && got.UID != ctb.UID && got.Spec.TrustBundle == nsIssuer.Status.TrustBundle
		})
	})

	t.Run("a bundle edited by hand is restored", func(t *testing.T) {
		ctb := getBundle(t, trustbundle.Name(issuer.RefFor(clusterIssuer)))
		ctb.Spec.TrustBundle = string(caSecretData(t, nil)[corev1.TLSCertKey])
		ctb.Labels["team"] = "edited"
		if err := e.admin.Update(t.Context(), ctb); err != nil {
			t.Fatal(err)
		}
		got := waitForBundle(t, ctb.Name, "the edited bundle to be restored", func(got *certificatesv1.ClusterTrustBundle) bool {
			return got != nil && got.ResourceVersion != ctb.ResourceVersion && got.Spec.TrustBundle == clusterIssuer.Status.TrustBundle
		})
		if got.UID != ctb.UID || got.Labels["team"] != "edited" {
			t.Errorf("restored as a new object (%v) or without the added label (%v); want the edited one, corrected", got.UID != ctb.UID, got.Labels)
		}
	})

	t.Run("a bundle whose name another ClusterTrustBundle holds is reported on the issuer", func(t *testing.T) {
		iss := createCAIssuer(t, ns, "taken", "ca", nil)
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
		ev := waitForIssuerEvent(t, iss, trustbundle.ReasonTrustBundleNameTaken)
		if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Note, taken.Name) {
			t.Errorf("event %s %q, want a Warning naming %s", ev.Type, ev.Note, taken.Name)
		}
		wantUntouched(t, taken)
	})

	t.Run("a ClusterIssuer whose bundle's name would be too long is told so", func(t *testing.T) {
		long := &v1alpha1.ClusterIssuer{
			ObjectMeta: metav1.ObjectMeta{Name: ns + "-" + strings.Repeat("l", 220-len(ns)-1)},
			Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: clusterIssuer.Name}},
		}
		if err := e.admin.Create(t.Context(), long); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.admin.Delete(context.Background(), long) })
		waitReady(t, long, metav1.ConditionTrue, v1alpha1.ReasonReady)
		ev := waitForIssuerEvent(t, long, trustbundle.ReasonTrustBundleInvalid)
		if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Note, "an issuer name of at most 219 characters fits") {
			t.Errorf("event %s %q, want a Warning saying how long the name may be", ev.Type, ev.Note)
		}
	})

	t.Run("deleting an issuer deletes its bundle", func(t *testing.T) {
		for _, iss := range []v1alpha1.GenericIssuer{nsIssuer, clusterIssuer} {
			waitForPublished(t, iss)
			if err := e.admin.Delete(t.Context(), iss); err != nil {
				t.Fatal(err)
			}
			waitForBundle(t, trustbundle.Name(issuer.RefFor(iss)), "the bundle of deleted "+issuer.RefFor(iss).String()+" to go", func(got *certificatesv1.ClusterTrustBundle) bool {
				return got == nil
			})
		}
		// The signer of the deleted Issuer had a bundle besides certmint's.
		wantUntouched(t, foreign)
	})

	t.Run("the bundle of an issuer deleted while no controller ran is removed", func(t *testing.T) {
		iss := createCAIssuer(t, ns, "while-down", "ca", nil)
		waitForPublished(t, iss)
		controller.Stop()
		if err := e.admin.Delete(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		// Started for the rest of the test, not only this step.
		controller = startController(testT, "trust-bundles-restarted")
		waitForBundle(t, trustbundle.Name(issuer.RefFor(iss)), "the restarted controller to remove the leftover bundle", func(got *certificatesv1.ClusterTrustBundle) bool {
			return got == nil
		})
		wantUntouched(t, foreign)
		wantUntouched(t, taken)
	})
}

// createForeignBundle creates a ClusterTrustBundle for signer without
// certmint's label, as another tool would, and removes it when t ends.
func createForeignBundle(t *testing.T, name, signer string) *certificatesv1.ClusterTrustBundle {
	t.Helper()
	ctb := &certificatesv1.ClusterTrustBundle{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app.kubernetes.io/managed-by": "someone-else"}},
		Spec: certificatesv1.ClusterTrustBundleSpec{
			SignerName:  signer,
			TrustBundle: string(caSecretData(t, nil)[corev1.TLSCertKey]),
		},
	}
	if err := env.admin.Create(t.Context(), ctb); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.admin.Delete(context.Background(), ctb) })
	return ctb
}

// wantUntouched checks that ctb is as it was created.
func wantUntouched(t *testing.T, ctb *certificatesv1.ClusterTrustBundle) {
	t.Helper()
	got := getBundle(t, ctb.Name)
	if got.UID != ctb.UID || got.ResourceVersion != ctb.ResourceVersion {
		t.Errorf("ClusterTrustBundle %s, not certmint's, was changed or replaced: %+v", ctb.Name, got.ObjectMeta)
	}
}

func getBundle(t *testing.T, name string) *certificatesv1.ClusterTrustBundle {
	t.Helper()
	var ctb certificatesv1.ClusterTrustBundle
	if err := env.admin.Get(t.Context(), types.NamespacedName{Name: name}, &ctb); err != nil {
		t.Fatalf("reading ClusterTrustBundle %s: %v", name, err)
	}
	return &ctb
}

// waitForBundle waits until done holds for the ClusterTrustBundle called
// name (nil while there is none) and returns the last one seen.
func waitForBundle(t *testing.T, name, what string, done func(*certificatesv1.ClusterTrustBundle) bool) *certificatesv1.ClusterTrustBundle {
	t.Helper()
	const timeout = 30 * time.Second
	var last *certificatesv1.ClusterTrustBundle
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		var ctb certificatesv1.ClusterTrustBundle
		switch err := env.admin.Get(ctx, types.NamespacedName{Name: name}, &ctb); {
		case apierrors.IsNotFound(err):
			last = nil
		case err != nil:
			return false, err
		default:
			last = &ctb
		}
		return done(last), nil
	})
	if err != nil {
		state := "none"
		if last != nil {
			state = fmt.Sprintf("labels %v, %d certificates", last.Labels, strings.Count(last.Spec.TrustBundle, "-----BEGIN"))
		}
		t.Fatalf("waited %s for %s (ClusterTrustBundle %s): %v; last seen: %s", timeout, what, name, err, state)
	}
	return last
}

// waitForPublished waits until iss's ClusterTrustBundle holds its current
// status.trustBundle, reading iss again on every try, and returns it.
func waitForPublished(t *testing.T, iss v1alpha1.GenericIssuer) *certificatesv1.ClusterTrustBundle {
	t.Helper()
	ref := issuer.RefFor(iss)
	return waitForBundle(t, trustbundle.Name(ref), "the trust bundle of "+ref.String()+" to be published", func(ctb *certificatesv1.ClusterTrustBundle) bool {
		if err := env.admin.Get(t.Context(), client.ObjectKeyFromObject(iss), iss); err != nil {
			return false
		}
		bundle := iss.GetStatus().TrustBundle
		return bundle != "" && ctb != nil && ctb.Spec.TrustBundle == bundle
	})
}

// waitForIssuerEvent waits for an Event with reason regarding iss. Events
// on a ClusterIssuer are in the default namespace.
func waitForIssuerEvent(t *testing.T, iss v1alpha1.GenericIssuer, reason string) *eventsv1.Event {
	t.Helper()
	ns := iss.GetNamespace()
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	var found *eventsv1.Event
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var events eventsv1.EventList
		if err := env.admin.List(ctx, &events, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for i, ev := range events.Items {
			if ev.Regarding.UID == iss.GetUID() && ev.Reason == reason {
				found = &events.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s Event on %s: %v", reason, issuer.RefFor(iss), err)
	}
	return found
}
