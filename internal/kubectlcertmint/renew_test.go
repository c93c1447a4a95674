package kubectlcertmint

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clienttesting "k8s.io/client-go/testing"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
)

// readyMesh is ClusterIssuer mesh, Ready, with reissueBefore.
func readyMesh(reissueBefore *metav1.Time) *v1alpha1.ClusterIssuer {
	return &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: "mesh", ResourceVersion: "7"},
		Status:     v1alpha1.IssuerStatus{Conditions: readyCondition(metav1.ConditionTrue, "Ready", ""), ReissueBefore: reissueBefore},
	}
}

// readyCA is Issuer ca of namespace, Ready.
func readyCA(namespace string) *v1alpha1.Issuer {
	return &v1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "ca", ResourceVersion: "3"},
		Status:     v1alpha1.IssuerStatus{Conditions: readyCondition(metav1.ConditionTrue, "Ready", "")},
	}
}

// patches returns the patches of the issuers' status the fakes saw.
func (f *fakes) patches(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, a := range f.dyn.Actions() {
		p, ok := a.(clienttesting.PatchAction)
		if !ok {
			continue
		}
		if p.GetSubresource() != "status" || p.GetPatchType() != types.MergePatchType {
			t.Errorf("patched %s/%s with %s, want a merge patch of status", p.GetResource().Resource, p.GetSubresource(), p.GetPatchType())
		}
		var m map[string]any
		if err := json.Unmarshal(p.GetPatch(), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func reissueBeforeOf(t *testing.T, f *fakes, ref schema.GroupVersionResource, namespace, name string) string {
	t.Helper()
	u, err := f.dyn.Resource(ref).Namespace(namespace).Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s, _, _ := unstructured.NestedString(u.Object, "status", "reissueBefore")
	return s
}

func TestRenewClusterIssuerSetsReissueBeforeToTheAPIServersTime(t *testing.T) {
	previous := metav1.NewTime(now.Add(-24 * time.Hour))
	f := newFakes(t, nil, readyMesh(&previous))
	code, out, errOut := f.run(t, "renew", "clusterissuer", "mesh")
	// The server's clock, 90 s behind the local one: a reissueBefore in the
	// server's future would have every certificate re-issued over and over.
	want := `ISSUER              REISSUE BEFORE        PREVIOUS
ClusterIssuer mesh  2030-01-02T03:02:35Z  2030-01-01T03:04:05Z

Every certificate requested before that time is re-issued: by each node's driver at a random time within its
--reissue-spread (30s by default), and a Certificate's Secret on its next reconcile. Pods keep their files until then.
`
	if code != ExitOK || out != want || errOut != "" {
		t.Errorf("exit %d, stdout\n%s\nstderr %q; want 0 and\n%s", code, out, errOut, want)
	}
	if got := reissueBeforeOf(t, f, clusterIssuersResource, "", "mesh"); got != "2030-01-02T03:02:35Z" {
		t.Errorf("status.reissueBefore = %q, want the API server's time", got)
	}
	patches := f.patches(t)
	if len(patches) != 1 || patches[0]["metadata"].(map[string]any)["resourceVersion"] != "7" {
		t.Errorf("patches %v; want one, conditional on the resourceVersion read", patches)
	}
}

func TestRenewIssuerNeverMovesReissueBeforeBack(t *testing.T) {
	// Set by the controller's rotation a moment ago, after the API server's
	// present second as the plugin reads it.
	later := metav1.NewTime(serverNow.Add(time.Second))
	f := newFakes(t, nil, readyMesh(&later))
	code, out, _ := f.run(t, "renew", "clusterissuer", "mesh", "-o", "json")
	var got RenewReport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if code != ExitOK || len(got.Issuers) != 1 || !got.Issuers[0].Unchanged || !got.Issuers[0].ReissueBefore.Equal(later.Time) || len(f.patches(t)) != 0 {
		t.Errorf("exit %d, report %+v, %d patches; want 0, the later time kept and nothing written", code, got, len(f.patches(t)))
	}
}

func TestRenewIssuerRetriesWhenTheStatusChangedSinceItWasRead(t *testing.T) {
	f := newFakes(t, nil, readyCA("shop"))
	conflicts := 0
	f.dyn.PrependReactor("patch", "issuers", func(clienttesting.Action) (bool, runtime.Object, error) {
		if conflicts++; conflicts == 1 {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "certmint.io", Resource: "issuers"}, "ca", nil)
		}
		return false, nil, nil
	})
	code, _, errOut := f.run(t, "renew", "issuer", "ca", "-n", "shop")
	gets := 0
	for _, a := range f.dyn.Actions() {
		if a.GetVerb() == "get" {
			gets++
		}
	}
	if gets != 2 {
		t.Errorf("%d reads of the issuer, want 2: the conflict is resolved on what the API server has now", gets)
	}
	if code != ExitOK || conflicts != 2 || reissueBeforeOf(t, f, issuersResource, "shop", "ca") != "2030-01-02T03:02:35Z" {
		t.Errorf("exit %d (%s), %d patches; want 0 after a second patch on a fresh read", code, errOut, conflicts)
	}
}

func TestRenewIssuerRefusesAnIssuerThatCannotSign(t *testing.T) {
	notReady := readyCA("shop")
	notReady.Status.Conditions = readyCondition(metav1.ConditionFalse, "SecretNotFound", "Secret shop/ca not found")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"an Issuer that is not Ready", []string{"renew", "issuer", "ca", "-n", "shop"}, "Issuer shop/ca is not Ready (SecretNotFound: Secret shop/ca not found)"},
		{"an Issuer that does not exist", []string{"renew", "issuer", "ca", "-n", "web"}, "Issuer web/ca does not exist"},
		{"a ClusterIssuer that does not exist", []string{"renew", "clusterissuer", "ca"}, "ClusterIssuer ca does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakes(t, nil, notReady)
			code, out, errOut := f.run(t, tc.args...)
			if code != ExitError || out != "" || !strings.Contains(errOut, tc.want) || len(f.writes()) != 0 {
				t.Errorf("exit %d, stdout %q, stderr %q, writes %v; want %d, an error with %q, nothing written", code, out, errOut, f.writes(), ExitError, tc.want)
			}
		})
	}
}

func TestRenewPodRefusesWithoutConsentToRenewItsWholeIssuers(t *testing.T) {
	f := newFakes(t, []runtime.Object{webPod()}, readyMesh(nil), readyCA("shop"))
	code, out, errOut := f.run(t, "renew", "pod", "web-0", "-n", "shop")
	if code != ExitError || out != "" || len(f.writes()) != 0 {
		t.Errorf("exit %d, stdout %q, writes %v; want %d and nothing written", code, out, f.writes(), ExitError)
	}
	for _, want := range []string{"certmint cannot re-issue one pod's certificates", "from ClusterIssuer mesh, Issuer shop/ca", "--whole-issuer", "recreate the pod"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr %q lacks %q", errOut, want)
		}
	}
}

func TestRenewPodWithWholeIssuerRenewsEachOfItsIssuersOnce(t *testing.T) {
	pod := webPod()
	// A second volume from mesh: mesh is asked once.
	pod.Spec.Volumes = append(pod.Spec.Volumes, pod.Spec.Volumes[0])
	pod.Spec.Volumes[len(pod.Spec.Volumes)-1].Name = "tls2"
	f := newFakes(t, []runtime.Object{pod}, readyMesh(nil), readyCA("shop"), readyCA("web"))
	code, out, errOut := f.run(t, "renew", "pod", "web-0", "-n", "shop", "--whole-issuer", "-o", "json")
	var got RenewReport
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("%v in %q (stderr %q)", err, out, errOut)
	}
	var renewed []string
	for _, i := range got.Issuers {
		renewed = append(renewed, i.Issuer.String())
	}
	if code != ExitOK || !slices.Equal(renewed, []string{"ClusterIssuer mesh", "Issuer shop/ca"}) || len(f.patches(t)) != 2 {
		t.Errorf("exit %d, renewed %v, %d patches; want 0, mesh and shop/ca once each", code, renewed, len(f.patches(t)))
	}
	if reissueBeforeOf(t, f, issuersResource, "web", "ca") != "" {
		t.Error("Issuer web/ca, not the pod's, was renewed")
	}
}
