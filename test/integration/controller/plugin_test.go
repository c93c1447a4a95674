package controller_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/internal/kubectlcertmint"
	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
)

// TestKubectlPlugin runs kubectl certmint as it runs on a workstation
// (its Main, with a kubeconfig) against the real API server and controller,
// as users bound to the roles of deploy/examples/kubectl-certmint-rbac.yaml
// and nothing else: status reports an issuer that is not Ready and the
// requests waiting; approve and deny decide pending requests, and the
// controller then signs the approved one but fails the approved one its
// issuer's policy refuses, and leaves the denied one denied; a user
// without the approve role cannot approve; renew issuer sets
// reissueBefore, which the controller keeps across its own status writes.
func TestKubectlPlugin(t *testing.T) {
	e := requireEnv(t)
	ns := uniqueName("plugin")

	// An Issuer that is Ready and a ClusterIssuer whose Secret is missing,
	// as a controller left them that is stopped while requests are made:
	// what nobody decided waits for a decision.
	setup := startController(t, ns+"-setup")
	it := newIssuance(t, ns)
	late := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: ns + "-late"},
		Spec:       v1alpha1.IssuerSpec{CA: &v1alpha1.CAIssuer{SecretName: ns + "-late"}},
	}
	if err := e.admin.Create(t.Context(), late); err != nil {
		t.Fatal(err)
	}
	waitReady(t, late, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound)
	setup.Stop()

	operator := pluginUser(t, ns, "operator", "certmint-plugin-view", "certmint-plugin-renew", "certmint-plugin-approve")
	viewer := pluginUser(t, ns, "viewer", "certmint-plugin-view")
	lateSigner := request.IssuerRef{Kind: request.KindClusterIssuer, Name: late.Name}.SignerName()
	good := createCSR(t, e.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}})).Name
	tooMuch := createCSR(t, e.driverA, newCSR(t, csrSpec{signer: it.signer, pod: it.podA, node: nodeA, dnsNames: []string{"www.example.com"}})).Name
	unwanted := createCSR(t, e.driverB, newCSR(t, csrSpec{signer: it.signer, pod: it.podB, node: nodeB, dnsNames: []string{it.svc}})).Name
	waiting := createCSR(t, e.driverA, newCSR(t, csrSpec{signer: lateSigner, pod: it.podA, node: nodeA, dnsNames: []string{it.svc}})).Name
	foreign := newCSR(t, csrSpec{signer: "example.com/foreign", pod: it.podA, node: nodeA, dnsNames: []string{it.svc}})
	foreign = createCSR(t, e.kube, foreign)

	t.Run("status reports the issuer that is not Ready and every request waiting, and exits 2", func(t *testing.T) {
		code, out, errOut := operator.run(t, "status", "-n", ns, "-o", "json")
		if code != kubectlcertmint.ExitUnhealthy {
			t.Errorf("exit %d (stderr %q), want %d", code, errOut, kubectlcertmint.ExitUnhealthy)
		}
		report := decodeStatus(t, out)
		issuers := map[string]kubectlcertmint.IssuerStatus{}
		for _, i := range report.Issuers {
			issuers[i.Issuer.String()] = i
		}
		caNotAfter := certsIn(t, it.trustBundle)[0].NotAfter
		if i := issuers["Issuer "+ns+"/ca"]; i.Ready != "True" || i.Problem != "" || i.CANotAfter == nil || !i.CANotAfter.Equal(caNotAfter) {
			t.Errorf("Issuer %s/ca: %+v; want Ready, its CA expiring %v", ns, i, caNotAfter)
		}
		if i := issuers["ClusterIssuer "+late.Name]; i.Ready != "False" || i.Reason != v1alpha1.ReasonSecretNotFound || i.Problem == "" {
			t.Errorf("ClusterIssuer %s: %+v; want not Ready for its missing Secret", late.Name, i)
		}
		states := requestStates(report)
		for _, name := range []string{good, tooMuch, unwanted, waiting} {
			if states[name] != "Pending" {
				t.Errorf("request %s: state %q, want Pending", name, states[name])
			}
		}
		if _, ok := states[foreign.Name]; ok {
			t.Errorf("status reports %s, another signer's request", foreign.Name)
		}
	})

	t.Run("a user without the approve role cannot approve", func(t *testing.T) {
		code, _, errOut := viewer.run(t, "approve", good)
		if code != kubectlcertmint.ExitError || !strings.Contains(errOut, "forbidden") {
			t.Errorf("exit %d, stderr %q; want %d, forbidden", code, errOut, kubectlcertmint.ExitError)
		}
		if conds := getCSR(t, good).Status.Conditions; len(conds) != 0 {
			t.Errorf("%s has conditions %+v, want none", good, conds)
		}
	})

	t.Run("approve and deny decide pending requests; another signer's is refused", func(t *testing.T) {
		if code, _, errOut := operator.run(t, "approve", good, tooMuch, waiting); code != kubectlcertmint.ExitOK {
			t.Fatalf("approve: exit %d, stderr %q", code, errOut)
		}
		if code, _, errOut := operator.run(t, "deny", unwanted, "--reason", "web-b moves to another issuer"); code != kubectlcertmint.ExitOK {
			t.Fatalf("deny: exit %d, stderr %q", code, errOut)
		}
		code, _, errOut := operator.run(t, "approve", foreign.Name)
		if code != kubectlcertmint.ExitError || !strings.Contains(errOut, "not a certmint issuer") {
			t.Errorf("approve %s: exit %d, stderr %q; want %d, refused", foreign.Name, code, errOut, kubectlcertmint.ExitError)
		}
		if conds := getCSR(t, foreign.Name).Status.Conditions; len(conds) != 0 {
			t.Errorf("%s has conditions %+v, want none", foreign.Name, conds)
		}
	})

	startController(t, ns)

	t.Run("the controller signs an approved request but still applies the issuer's policy", func(t *testing.T) {
		waitForCSR(t, good, issued)
		failed := waitForCSR(t, tooMuch, func(csr *certificatesv1.CertificateSigningRequest) bool {
			return condition(csr, certificatesv1.CertificateFailed) != nil
		})
		if c := condition(failed, certificatesv1.CertificateFailed); c.Reason != "NameNotAllowed" || len(failed.Status.Certificate) != 0 {
			t.Errorf("%s: Failed %s (%s), certificate of %d bytes; want NameNotAllowed and none", tooMuch, c.Reason, c.Message, len(failed.Status.Certificate))
		}
		denied := getCSR(t, unwanted)
		if c := condition(denied, certificatesv1.CertificateDenied); c == nil || c.Reason != kubectlcertmint.ReasonDenied ||
			c.Message != "web-b moves to another issuer" || len(denied.Status.Certificate) != 0 || condition(denied, certificatesv1.CertificateApproved) != nil {
			t.Errorf("%s: %+v; want denied as the plugin wrote it, and nothing else", unwanted, denied.Status)
		}
		// The approved request to the issuer that is not Ready waits, then
		// is signed once the issuer is Ready.
		if got := getCSR(t, waiting); len(got.Status.Certificate) != 0 || condition(got, certificatesv1.CertificateApproved) == nil {
			t.Errorf("%s: %+v; want approved, waiting for its issuer", waiting, got.Status)
		}
		createTLSSecret(t, certmintNS, late.Name, caSecretData(t, nil))
		waitReady(t, late, metav1.ConditionTrue, v1alpha1.ReasonReady)
		waitForCSR(t, waiting, issued)
	})

	t.Run("status reports the failed and the denied request with their reasons", func(t *testing.T) {
		code, out, _ := operator.run(t, "status", "-n", ns, "-o", "json")
		report := decodeStatus(t, out)
		got := map[string]kubectlcertmint.RequestStatus{}
		for _, q := range report.Requests {
			got[q.Name] = q
		}
		if code != kubectlcertmint.ExitUnhealthy || len(got) != 2 ||
			got[tooMuch].State != "Failed" || got[tooMuch].Reason != "NameNotAllowed" ||
			got[unwanted].State != "Denied" || got[unwanted].Reason != kubectlcertmint.ReasonDenied {
			t.Errorf("exit %d, requests %+v; want %d, %s Failed for the policy and %s Denied by the plugin", code, got, kubectlcertmint.ExitUnhealthy, tooMuch, unwanted)
		}
		code, table, _ := operator.run(t, "status", "-n", ns)
		if !strings.Contains(table, "Issuer "+ns+"/ca") || !strings.Contains(table, "need(s) attention") || code != kubectlcertmint.ExitUnhealthy {
			t.Errorf("exit %d, table\n%s", code, table)
		}
	})

	t.Run("renew issuer sets reissueBefore, which the controller keeps", func(t *testing.T) {
		before := time.Now().Add(-time.Second)
		code, out, errOut := operator.run(t, "renew", "issuer", "ca", "-n", ns, "-o", "json")
		var report kubectlcertmint.RenewReport
		if err := json.Unmarshal([]byte(out), &report); err != nil || code != kubectlcertmint.ExitOK || len(report.Issuers) != 1 {
			t.Fatalf("exit %d, stdout %q, stderr %q: %v", code, out, errOut, err)
		}
		set := report.Issuers[0].ReissueBefore
		if set.Before(before.Truncate(time.Second)) || set.After(time.Now()) {
			t.Errorf("reissueBefore %v, want the API server's time, now", set)
		}
		iss := &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "ca"}}
		kept := func(when string) {
			t.Helper()
			if err := e.admin.Get(t.Context(), client.ObjectKeyFromObject(iss), iss); err != nil {
				t.Fatal(err)
			}
			if r := iss.Status.ReissueBefore; r == nil || !r.Time.Equal(set) {
				t.Errorf("%s: reissueBefore %v, want %v, as the plugin set it", when, r, set)
			}
		}
		kept("after renew")

		// Two status writes of the controller's: the issuer turns not Ready
		// when its Secret goes, and Ready again when the same CA comes back.
		var secret corev1.Secret
		if err := e.admin.Get(t.Context(), client.ObjectKey{Namespace: ns, Name: "ca"}, &secret); err != nil {
			t.Fatal(err)
		}
		if err := e.admin.Delete(t.Context(), &secret); err != nil {
			t.Fatal(err)
		}
		waitReady(t, iss, metav1.ConditionFalse, v1alpha1.ReasonSecretNotFound)
		kept("after the controller reported the issuer not Ready")

		code, _, errOut = operator.run(t, "renew", "issuer", "ca", "-n", ns)
		if code != kubectlcertmint.ExitError || !strings.Contains(errOut, "is not Ready (SecretNotFound") {
			t.Errorf("renew of an issuer that is not Ready: exit %d, stderr %q; want refused", code, errOut)
		}

		createTLSSecret(t, ns, "ca", secret.Data)
		waitReady(t, iss, metav1.ConditionTrue, v1alpha1.ReasonReady)
		kept("after the controller reported the issuer Ready again")
	})
}

// pluginRunner runs kubectl certmint with a kubeconfig.
type pluginRunner struct{ kubeconfig string }

func (p pluginRunner) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = kubectlcertmint.Main(t.Context(), append(args, "--kubeconfig", p.kubeconfig), &out, &errOut)
	return code, out.String(), errOut.String()
}

// pluginUser is a ServiceAccount of namespace bound to the named roles of
// deploy/examples/kubectl-certmint-rbac.yaml (ClusterRoles cluster-wide,
// Roles in their namespace), and a kubeconfig that authenticates as it.
func pluginUser(t *testing.T, namespace, name string, roles ...string) pluginRunner {
	t.Helper()
	e := requireEnv(t)
	ctx := t.Context()
	data, err := os.ReadFile(filepath.Join("..", "..", "..", "deploy", "examples", "kubectl-certmint-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	decoder := serializer.NewCodecFactory(e.scheme).UniversalDeserializer()
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: namespace, Name: name}
	bound := map[string]bool{}
	for doc := range strings.SplitSeq(string(data), "\n---\n") {
		obj, _, err := decoder.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("deploy/examples/kubectl-certmint-rbac.yaml: %v", err)
		}
		if err := e.admin.Create(ctx, obj.(client.Object)); client.IgnoreAlreadyExists(err) != nil {
			t.Fatal(err)
		}
		role := obj.(client.Object)
		if !slices.Contains(roles, role.GetName()) {
			continue
		}
		bound[role.GetName()] = true
		meta := metav1.ObjectMeta{Name: namespace + "-" + name + "-" + role.GetName()}
		var binding client.Object
		switch role.(type) {
		case *rbacv1.ClusterRole:
			binding = &rbacv1.ClusterRoleBinding{ObjectMeta: meta, Subjects: []rbacv1.Subject{subject},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.GetName()}}
		default:
			meta.Namespace = role.GetNamespace()
			binding = &rbacv1.RoleBinding{ObjectMeta: meta, Subjects: []rbacv1.Subject{subject},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.GetName()}}
		}
		if err := e.admin.Create(ctx, binding); err != nil {
			t.Fatal(err)
		}
	}
	if len(bound) != len(roles) {
		t.Fatalf("bound %v; deploy/examples/kubectl-certmint-rbac.yaml lacks some of %v", bound, roles)
	}
	if err := e.ensureServiceAccount(ctx, namespace, name); err != nil {
		t.Fatal(err)
	}
	tr, err := e.kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	caData := e.cp.Config.CAData
	if len(caData) == 0 {
		if caData, err = os.ReadFile(e.cp.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["it"] = &clientcmdapi.Cluster{Server: e.cp.Config.Host, CertificateAuthorityData: caData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["it"] = &clientcmdapi.Context{Cluster: "it", AuthInfo: name, Namespace: "default"}
	kc.CurrentContext = "it"
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return pluginRunner{kubeconfig: path}
}

func decodeStatus(t *testing.T, out string) kubectlcertmint.StatusReport {
	t.Helper()
	var report kubectlcertmint.StatusReport
	if err := json.Unmarshal([]byte(out), &report); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	return report
}

func requestStates(r kubectlcertmint.StatusReport) map[string]string {
	out := map[string]string{}
	for _, q := range r.Requests {
		out[q.Name] = q.State
	}
	return out
}

func getCSR(t *testing.T, name string) *certificatesv1.CertificateSigningRequest {
	t.Helper()
	var csr certificatesv1.CertificateSigningRequest
	if err := env.admin.Get(t.Context(), client.ObjectKey{Name: name}, &csr); err != nil {
		t.Fatal(err)
	}
	return &csr
}
