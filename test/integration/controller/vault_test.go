package controller_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/vaultdev"
)

// vaultPolicy lets a token sign with the test role, and nothing else
// beyond Vault's default policy.
const vaultPolicy = `path "pki/sign/certmint" { capabilities = ["update"] }`

// TestVaultIssuer signs node-bound requests with a real Vault dev server
// through each auth method, and shows what Vault's state does to the
// issuer: the controller logs in once for many signatures, renews its
// token, logs in again when the token is revoked, publishes Vault's CA
// with the CA issuer's rotation overlap, fails a request with the role's
// own refusal, and waits out a sealed Vault.
func TestVaultIssuer(t *testing.T) {
	e := requireEnv(t)
	ctx := t.Context()
	v := startVault(t)
	pki, err := v.EnablePKI(ctx, "pki")
	if err != nil {
		t.Fatal(err)
	}
	err = v.WriteRole(ctx, pki, "certmint", map[string]any{
		"allowed_domains":  "certmint.test",
		"allow_subdomains": true,
		"allowed_uri_sans": "spiffe://cluster.local/*",
		"require_cn":       false,
		"key_type":         "any",
		"max_ttl":          "24h",
		"no_store":         true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Client.Sys().PutPolicyWithContext(ctx, "certmint", vaultPolicy); err != nil {
		t.Fatal(err)
	}
	ctrl := startController(t, "vault")

	ns := uniqueName("vault")
	pod, err := e.createPod(ctx, ns, "web", nodeA, "web")
	if err != nil {
		t.Fatal(err)
	}
	// Names the pod may ask for, one of which the Vault role refuses.
	pol := &v1alpha1.Policy{AllowedDNSNames: []string{
		"${POD_NAME}.${POD_NAMESPACE}.certmint.test",
		"${POD_NAME}.${POD_NAMESPACE}.elsewhere.test",
		"*.${POD_NAMESPACE}.certmint.test",
	}}
	dnsName := "web." + ns + ".certmint.test"
	spiffeID := "spiffe://cluster.local/ns/" + ns + "/sa/web"

	// sign has the driver on node-a ask iss for a certificate for the pod
	// and returns the chain once it is issued.
	sign := func(t *testing.T, iss v1alpha1.GenericIssuer) []*x509.Certificate {
		t.Helper()
		created := createCSR(t, e.driverA, newCSR(t, csrSpec{signer: signerOf(iss), pod: pod, node: nodeA, dnsNames: []string{dnsName}, uris: []string{spiffeID}}))
		return certsIn(t, waitForCSR(t, created.Name, issued).Status.Certificate)
	}

	token := vaultToken(t, v, "certmint")
	tokenIssuer := &v1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vault-token"},
		Spec: v1alpha1.IssuerSpec{Policy: pol, Vault: &v1alpha1.VaultIssuer{
			Server:   v.Addr,
			Path:     "pki/sign/certmint",
			CABundle: string(v.CACert),
			Auth:     v1alpha1.VaultAuth{TokenSecretRef: &v1alpha1.IssuerSecretKeySelector{Name: "vault-token", Key: "token"}},
		}},
	}
	createSecret(t, ns, "vault-token", map[string][]byte{"token": []byte(token + "\n")})
	createIssuer(t, tokenIssuer)

	t.Run("with a token, an Issuer publishes Vault's CA and signs node-bound requests", func(t *testing.T) {
		cond := waitVaultIssuer(t, tokenIssuer, "Ready", vaultReady(metav1.ConditionTrue, v1alpha1.ReasonReady))
		t.Logf("issuer ready: %s", cond.Message)
		bundle := certsIn(t, []byte(tokenIssuer.Status.TrustBundle))
		if !slices.EqualFunc(bundle, []*x509.Certificate{pki.Intermediate, pki.Root}, (*x509.Certificate).Equal) {
			t.Fatalf("trust bundle holds %v, want Vault's issuing CA and its root", subjectsOf(bundle))
		}

		chain := sign(t, tokenIssuer)
		leaf := chain[0]
		if !slices.EqualFunc(chain[1:], []*x509.Certificate{pki.Intermediate}, (*x509.Certificate).Equal) {
			t.Errorf("chain above the leaf is %v, want the issuing CA alone (roots stay in the trust bundle)", subjectsOf(chain[1:]))
		}
		if !slices.Equal(leaf.DNSNames, []string{dnsName}) || len(leaf.URIs) != 1 || leaf.URIs[0].String() != spiffeID {
			t.Errorf("leaf names are %v %v, want exactly [%s] [%s]", leaf.DNSNames, leaf.URIs, dnsName, spiffeID)
		}
		key, err := csrKey()
		if err != nil {
			t.Fatal(err)
		}
		if !key.PublicKey.Equal(leaf.PublicKey) {
			t.Error("the leaf is not for the key of the node's request")
		}
		verifyAgainst(t, chain, bundle, dnsName)
	})

	t.Run("a name the Vault role forbids fails the request with Vault's message", func(t *testing.T) {
		created := createCSR(t, e.driverA, newCSR(t, csrSpec{signer: signerOf(tokenIssuer), pod: pod, node: nodeA, dnsNames: []string{"web." + ns + ".elsewhere.test"}}))
		csr := waitForCSR(t, created.Name, failed)
		if condition(csr, certificatesv1.CertificateApproved) == nil {
			t.Error("the request was not approved: the refusal must come from Vault, not the policy")
		}
		msg := condition(csr, certificatesv1.CertificateFailed).Message
		if !strings.Contains(msg, "not allowed by this role") || !strings.Contains(msg, "elsewhere.test") {
			t.Errorf("the failure does not carry Vault's refusal: %s", msg)
		}
	})

	t.Run("a token that may not sign keeps the issuer not Ready", func(t *testing.T) {
		createSecret(t, ns, "vault-weak-token", map[string][]byte{"token": []byte(vaultToken(t, v, "default"))})
		weak := tokenIssuer.DeepCopy()
		weak.ObjectMeta = metav1.ObjectMeta{Namespace: ns, Name: "vault-weak"}
		weak.Spec.Vault.Auth.TokenSecretRef.Name = "vault-weak-token"
		weak.Status = v1alpha1.IssuerStatus{}
		createIssuer(t, weak)
		cond := waitVaultIssuer(t, weak, "not Ready for want of permission", vaultReady(metav1.ConditionFalse, "VaultPermissionDenied"))
		if !strings.Contains(cond.Message, `path "pki/sign/certmint"`) {
			t.Errorf("the message does not say which policy is missing: %s", cond.Message)
		}
	})

	// A ClusterIssuer reaching Vault's mutual-TLS listener, with its CA
	// bundle and client certificate in Secrets, logging in with AppRole.
	// Its tokens live 15s, so the run sees them renewed.
	if err := v.EnableAuth(ctx, "approle", "approle"); err != nil {
		t.Fatal(err)
	}
	roleID, secretID, err := v.AppRole(ctx, "approle", "certmint", map[string]any{
		"token_policies": "certmint", "token_ttl": "15s", "token_max_ttl": "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
	appRoleName := uniqueName("vault-approle")
	createSecret(t, certmintNS, appRoleName+"-secret-id", map[string][]byte{"secretId": []byte(secretID)})
	createSecret(t, certmintNS, appRoleName+"-ca", map[string][]byte{"ca.crt": v.MutualTLSCACert})
	createTLSSecret(t, certmintNS, appRoleName+"-client", map[string][]byte{corev1.TLSCertKey: v.ClientCert, corev1.TLSPrivateKeyKey: v.ClientKey})
	appRoleIssuer := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: appRoleName},
		Spec: v1alpha1.IssuerSpec{Policy: pol, Vault: &v1alpha1.VaultIssuer{
			Server:                      v.MutualTLSAddr,
			Path:                        "pki/sign/certmint",
			CABundleSecretRef:           &v1alpha1.IssuerSecretKeySelector{Name: appRoleName + "-ca", Key: "ca.crt"},
			ClientCertificateSecretName: appRoleName + "-client",
			Auth: v1alpha1.VaultAuth{AppRole: &v1alpha1.VaultAppRoleAuth{
				RoleID:    roleID,
				SecretRef: v1alpha1.IssuerSecretKeySelector{Name: appRoleName + "-secret-id", Key: "secretId"},
			}},
		}},
	}
	createIssuer(t, appRoleIssuer)
	appRoleLogins := func() int { return vaultCount(t, v, "auth/approle/login") }

	t.Run("with AppRole over mutual TLS, one login serves many signatures", func(t *testing.T) {
		waitVaultIssuer(t, appRoleIssuer, "Ready", vaultReady(metav1.ConditionTrue, v1alpha1.ReasonReady))
		const n = 20
		var names []string
		for range n {
			created := createCSR(t, e.driverA, newCSR(t, csrSpec{signer: signerOf(appRoleIssuer), pod: pod, node: nodeA, dnsNames: []string{dnsName}}))
			names = append(names, created.Name)
		}
		for _, name := range names {
			verifyAgainst(t, certsIn(t, waitForCSR(t, name, issued).Status.Certificate), certsIn(t, []byte(appRoleIssuer.Status.TrustBundle)), dnsName)
		}
		signed, logins := vaultCount(t, v, "pki/sign/certmint"), appRoleLogins()
		if logins != 1 {
			t.Errorf("Vault's audit log shows %d AppRole logins for %d signatures, want 1", logins, signed)
		}
		metric, err := ctrl.metric(`certmint_vault_logins_total{method="approle",signer="` + signerOf(appRoleIssuer) + `"}`)
		if err != nil || metric != 1 {
			t.Errorf("certmint_vault_logins_total = %v (%v), want 1", metric, err)
		}
		t.Logf("%d signatures in all, %d AppRole login", signed, logins)
	})

	t.Run("a token with a short TTL is renewed rather than replaced", func(t *testing.T) {
		waitVault(t, "two renewals of the AppRole token", func() bool { return vaultCount(t, v, "auth/token/renew-self") >= 2 })
		if logins := appRoleLogins(); logins != 1 {
			t.Errorf("%d AppRole logins after renewals, want 1", logins)
		}
		sign(t, appRoleIssuer)
	})

	t.Run("a revoked token leads to one fresh login", func(t *testing.T) {
		accessor := loginAccessor(t, v, "auth/approle/login")
		if _, err := v.Client.Logical().WriteWithContext(ctx, "auth/token/revoke-accessor", map[string]any{"accessor": accessor}); err != nil {
			t.Fatal(err)
		}
		sign(t, appRoleIssuer)
		waitVault(t, "a second AppRole login", func() bool { return appRoleLogins() >= 2 })
		sign(t, appRoleIssuer)
		if logins := appRoleLogins(); logins != 2 {
			t.Errorf("%d AppRole logins after one revocation, want 2", logins)
		}
	})

	t.Run("a Certificate is signed by Vault too", func(t *testing.T) {
		cert := newCert(ns, "www", appRoleName, "www."+ns+".certmint.test")
		if err := e.admin.Create(ctx, cert); err != nil {
			t.Fatal(err)
		}
		waitCert(t, cert, "Ready", readyIs(metav1.ConditionTrue, ""))
		leafOf(t, readySecret(t, ns, cert.Spec.SecretName), []byte(appRoleIssuer.Status.TrustBundle), "www."+ns+".certmint.test")
	})

	kubernetesIssuer := setUpKubernetesAuth(t, v, pol)
	kubernetesLogins := func() int { return vaultCount(t, v, "auth/kubernetes/login") }

	t.Run("with Kubernetes auth, Vault reviews a token the controller requested for its ServiceAccount", func(t *testing.T) {
		waitVaultIssuer(t, kubernetesIssuer, "Ready", vaultReady(metav1.ConditionTrue, v1alpha1.ReasonReady))
		sign(t, kubernetesIssuer)
		sign(t, kubernetesIssuer)
		if logins := kubernetesLogins(); logins != 1 {
			t.Errorf("%d Kubernetes logins, want 1", logins)
		}
	})

	t.Run("a token for another audience is refused by the Vault role", func(t *testing.T) {
		other := kubernetesIssuer.DeepCopy()
		other.ObjectMeta = metav1.ObjectMeta{Name: uniqueName("vault-audience")}
		other.Spec.Vault.Auth.Kubernetes.ServiceAccountRef.Audience = "vault://somewhere-else"
		other.Status = v1alpha1.IssuerStatus{}
		createIssuer(t, other)
		cond := waitVaultIssuer(t, other, "not Ready", vaultReady(metav1.ConditionFalse, "VaultLoginFailed"))
		t.Logf("refused: %s", cond.Message)
	})

	t.Run("an Issuer's ServiceAccount serves it only once the controller is granted its tokens", func(t *testing.T) {
		nsIssuer := namespacedKubernetesIssuer(t, v, ns, pol)
		cond := waitVaultIssuer(t, nsIssuer, "not Ready without RBAC", vaultReady(metav1.ConditionFalse, "ServiceAccountTokenFailed"))
		if !strings.Contains(cond.Message, "serviceaccounts/token") {
			t.Errorf("the message does not say what to grant: %s", cond.Message)
		}
		grantTokenRequests(t, ns, "vault-client")
		waitVaultIssuer(t, nsIssuer, "Ready once granted", vaultReady(metav1.ConditionTrue, v1alpha1.ReasonReady))
		sign(t, nsIssuer)
	})

	t.Run("a new CA in Vault is published next to the old one, which retires", func(t *testing.T) {
		old := pki.Intermediate
		next, err := v.NewIntermediate(ctx, pki)
		if err != nil {
			t.Fatal(err)
		}
		waitVaultIssuer(t, tokenIssuer, "the new CA published and the old one retiring", func(_ *metav1.Condition, st *v1alpha1.IssuerStatus) bool {
			bundle := certsIn(t, []byte(st.TrustBundle))
			return slices.ContainsFunc(bundle, next.Equal) && slices.ContainsFunc(bundle, old.Equal) && len(st.RetiringCAs) == 1 && st.ReissueBefore != nil
		})
		if got := certsIn(t, []byte(tokenIssuer.Status.RetiringCAs[0].Certificate)); !got[0].Equal(old) {
			t.Errorf("retiring %s, want the old intermediate", got[0].Subject)
		}
		chain := sign(t, tokenIssuer)
		if !chain[1].Equal(next) {
			t.Errorf("signed by %s, want the new intermediate", chain[1].Subject)
		}
		verifyAgainst(t, chain, certsIn(t, []byte(tokenIssuer.Status.TrustBundle)), dnsName)
	})

	t.Run("a sealed Vault turns issuers not Ready until it is unsealed", func(t *testing.T) {
		loginsBefore := kubernetesLogins()
		bundleBefore := tokenIssuer.Status.TrustBundle
		if err := v.Seal(ctx); err != nil {
			t.Fatal(err)
		}
		cond := waitVaultIssuer(t, tokenIssuer, "not Ready while sealed", vaultReady(metav1.ConditionFalse, "VaultSealed"))
		t.Logf("sealed: %s", cond.Message)
		if tokenIssuer.Status.TrustBundle != bundleBefore {
			t.Error("the trust bundle changed while Vault was sealed; certificates issued stay valid and must stay trusted")
		}
		waitVaultIssuer(t, kubernetesIssuer, "not Ready while sealed", vaultReady(metav1.ConditionFalse, "VaultSealed"))
		// A request made meanwhile waits rather than fails.
		created := createCSR(t, e.driverA, newCSR(t, csrSpec{signer: signerOf(kubernetesIssuer), pod: pod, node: nodeA, dnsNames: []string{dnsName}}))
		if err := v.Unseal(ctx); err != nil {
			t.Fatal(err)
		}
		waitVaultIssuer(t, kubernetesIssuer, "Ready once unsealed", vaultReady(metav1.ConditionTrue, v1alpha1.ReasonReady))
		csr := waitForCSR(t, created.Name, settled)
		if !issued(csr) {
			t.Fatalf("the request made while Vault was sealed was not issued: %+v", csr.Status.Conditions)
		}
		// The token outlived the seal: no login was needed.
		if logins := kubernetesLogins(); logins != loginsBefore {
			t.Errorf("%d Kubernetes logins across the seal, want %d", logins, loginsBefore)
		}
	})
}

// setUpKubernetesAuth configures Vault's Kubernetes auth against the test's
// API server, as outside a pod: Vault reviews tokens (TokenReview) with a
// reviewer ServiceAccount's token and trusts the API server's CA. It
// returns a ClusterIssuer logging in as certmint-vault, the ServiceAccount
// deploy/rbac/controller.yaml lets the controller request tokens for.
func setUpKubernetesAuth(t *testing.T, v *vaultdev.Server, pol *v1alpha1.Policy) *v1alpha1.ClusterIssuer {
	t.Helper()
	e, ctx := env, t.Context()
	reviewer := "vault-token-reviewer"
	if err := e.ensureServiceAccount(ctx, certmintNS, reviewer); err != nil {
		t.Fatal(err)
	}
	err := e.admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "vault-token-reviewer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: certmintNS, Name: reviewer}},
	})
	if client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	tr, err := e.kube.CoreV1().ServiceAccounts(certmintNS).CreateToken(ctx, reviewer, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	apiCA := e.cp.Config.CAData
	if len(apiCA) == 0 {
		if apiCA, err = os.ReadFile(e.cp.CAFile); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.EnableAuth(ctx, "kubernetes", "kubernetes"); err != nil {
		t.Fatal(err)
	}
	_, err = v.Client.Logical().WriteWithContext(ctx, "auth/kubernetes/config", map[string]any{
		"kubernetes_host":      e.cp.Config.Host,
		"kubernetes_ca_cert":   string(apiCA),
		"token_reviewer_jwt":   tr.Status.Token,
		"disable_local_ca_jwt": true,
	})
	if err != nil {
		t.Fatal(err)
	}
	name := uniqueName("vault-kubernetes")
	_, err = v.Client.Logical().WriteWithContext(ctx, "auth/kubernetes/role/certmint-cluster", map[string]any{
		"bound_service_account_names":      "certmint-vault",
		"bound_service_account_namespaces": certmintNS,
		"audience":                         "vault://" + name,
		"token_policies":                   "certmint",
		"token_ttl":                        "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.IssuerSpec{Policy: pol, Vault: &v1alpha1.VaultIssuer{
			Server:   v.Addr,
			Path:     "pki/sign/certmint",
			CABundle: string(v.CACert),
			Auth: v1alpha1.VaultAuth{Kubernetes: &v1alpha1.VaultKubernetesAuth{
				Role:              "certmint-cluster",
				ServiceAccountRef: &v1alpha1.VaultServiceAccountRef{Name: "certmint-vault"},
			}},
		}},
	}
	createIssuer(t, iss)
	return iss
}

// namespacedKubernetesIssuer returns an Issuer in ns logging in with
// Kubernetes auth as ServiceAccount vault-client of ns, and the Vault role
// that admits that ServiceAccount with the Issuer's default audience.
func namespacedKubernetesIssuer(t *testing.T, v *vaultdev.Server, ns string, pol *v1alpha1.Policy) *v1alpha1.Issuer {
	t.Helper()
	if err := env.ensureServiceAccount(t.Context(), ns, "vault-client"); err != nil {
		t.Fatal(err)
	}
	_, err := v.Client.Logical().WriteWithContext(t.Context(), "auth/kubernetes/role/"+ns, map[string]any{
		"bound_service_account_names":      "vault-client",
		"bound_service_account_namespaces": ns,
		"audience":                         "vault://" + ns + "/vault-kubernetes",
		"token_policies":                   "certmint",
		"token_ttl":                        "1h",
	})
	if err != nil {
		t.Fatal(err)
	}
	iss := &v1alpha1.Issuer{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vault-kubernetes"},
		Spec: v1alpha1.IssuerSpec{Policy: pol, Vault: &v1alpha1.VaultIssuer{
			Server:   v.Addr,
			Path:     "pki/sign/certmint",
			CABundle: string(v.CACert),
			Auth: v1alpha1.VaultAuth{Kubernetes: &v1alpha1.VaultKubernetesAuth{
				Role:              ns,
				ServiceAccountRef: &v1alpha1.VaultServiceAccountRef{Name: "vault-client"},
			}},
		}},
	}
	createIssuer(t, iss)
	return iss
}

// grantTokenRequests lets the controller request tokens for the one
// ServiceAccount sa of ns, as docs/issuers.md tells an administrator to.
func grantTokenRequests(t *testing.T, ns, sa string) {
	t.Helper()
	name := "certmint-controller-vault-token"
	objs := []client.Object{
		&rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"serviceaccounts/token"}, ResourceNames: []string{sa}, Verbs: []string{"create"}}},
		},
		&rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: certmintNS, Name: controllerSA}},
		},
	}
	for _, o := range objs {
		if err := env.admin.Create(t.Context(), o); err != nil {
			t.Fatal(err)
		}
	}
}

// TestVaultIssuerSpecValidation shows the API server refusing Vault specs
// the controller could not use safely.
func TestVaultIssuerSpecValidation(t *testing.T) {
	e := requireEnv(t)
	valid := func() *v1alpha1.VaultIssuer {
		return &v1alpha1.VaultIssuer{
			Server: "https://vault.example.com:8200",
			Path:   "pki/sign/certmint",
			Auth:   v1alpha1.VaultAuth{TokenSecretRef: &v1alpha1.IssuerSecretKeySelector{Name: "vault", Key: "token"}},
		}
	}
	sel := &v1alpha1.IssuerSecretKeySelector{Name: "vault", Key: "x"}
	for _, c := range []struct {
		name   string
		change func(*v1alpha1.VaultIssuer)
		want   string
	}{
		{name: "issue, where Vault makes the key", change: func(s *v1alpha1.VaultIssuer) { s.Path = "pki/issue/certmint" }, want: "never uses issue/"},
		{name: "plain http", change: func(s *v1alpha1.VaultIssuer) { s.Server = "http://vault:8200" }, want: "https URL"},
		{name: "credentials in the URL", change: func(s *v1alpha1.VaultIssuer) { s.Server = "https://admin:hunter2@vault:8200" }, want: "must hold no credentials"},
		{name: "two auth methods", change: func(s *v1alpha1.VaultIssuer) {
			s.Auth.AppRole = &v1alpha1.VaultAppRoleAuth{RoleID: "r", SecretRef: *sel}
		}, want: "exactly one of tokenSecretRef, appRole or kubernetes"},
		{name: "no auth method", change: func(s *v1alpha1.VaultIssuer) { s.Auth = v1alpha1.VaultAuth{} }, want: "exactly one of tokenSecretRef"},
		{name: "two CA bundles", change: func(s *v1alpha1.VaultIssuer) { s.CABundle, s.CABundleSecretRef = "x", sel }, want: "at most one of caBundle"},
		{name: "a ServiceAccount and a token Secret", change: func(s *v1alpha1.VaultIssuer) {
			s.Auth = v1alpha1.VaultAuth{Kubernetes: &v1alpha1.VaultKubernetesAuth{Role: "r", SecretRef: sel, ServiceAccountRef: &v1alpha1.VaultServiceAccountRef{Name: "sa"}}}
		}, want: "exactly one of serviceAccountRef or secretRef"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := valid()
			c.change(spec)
			iss := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: uniqueName("vault-invalid")}, Spec: v1alpha1.IssuerSpec{Vault: spec}}
			err := e.admin.Create(t.Context(), iss)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("creating the issuer: %v, want a refusal saying %q", err, c.want)
			}
		})
	}
	t.Run("a valid spec with defaults is accepted, on an Issuer too", func(t *testing.T) {
		spec := valid()
		spec.Auth = v1alpha1.VaultAuth{AppRole: &v1alpha1.VaultAppRoleAuth{RoleID: "r", SecretRef: *sel}}
		ns := uniqueName("vault-valid")
		if err := e.ensureServiceAccount(t.Context(), ns, "default"); err != nil {
			t.Fatal(err)
		}
		iss := &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vault"}, Spec: v1alpha1.IssuerSpec{Vault: spec}}
		if err := e.admin.Create(t.Context(), iss); err != nil {
			t.Fatal(err)
		}
		if got := iss.Spec.Vault.Auth.AppRole.Path; got != "approle" {
			t.Errorf("appRole.path defaults to %q, want approle", got)
		}
	})
}

// startVault runs a Vault dev server with a mutual-TLS listener until t
// ends, showing its log if t failed.
func startVault(t *testing.T) *vaultdev.Server {
	t.Helper()
	dir := t.TempDir()
	v, err := vaultdev.Start(t.Context(), vaultdev.Options{Dir: dir, MutualTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		v.Stop()
		if t.Failed() {
			t.Logf("vault log:\n%s", v.LogTail(60))
		}
	})
	return v
}

// vaultToken creates a token with policy (and Vault's default policy).
func vaultToken(t *testing.T, v *vaultdev.Server, policy string) string {
	t.Helper()
	secret, err := v.Client.Auth().Token().CreateWithContext(t.Context(), &vaultapi.TokenCreateRequest{Policies: []string{policy}, TTL: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	return secret.Auth.ClientToken
}

// vaultCount counts Vault's successful answers to requests for path.
func vaultCount(t *testing.T, v *vaultdev.Server, path string) int {
	t.Helper()
	n, err := v.Count(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// loginAccessor is the accessor of the token of the last successful
// login at path.
func loginAccessor(t *testing.T, v *vaultdev.Server, path string) string {
	t.Helper()
	answers, err := v.Answers()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range slices.Backward(answers) {
		if a.Path == path && a.Error == "" && a.Accessor != "" {
			return a.Accessor
		}
	}
	t.Fatalf("no login at %s in Vault's audit log", path)
	return ""
}

// vaultWait is how long the tests wait for what Vault's state does to an
// issuer: the controller looks at a Vault issuer every 30 seconds.
const vaultWait = 2 * time.Minute

// waitVault waits for done, which looks at Vault.
func waitVault(t *testing.T, what string, done func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 200*time.Millisecond, vaultWait, true, func(context.Context) (bool, error) {
		return done(), nil
	})
	if err != nil {
		t.Fatalf("waited %s for %s: %v", vaultWait, what, err)
	}
}

// waitVaultIssuer waits until done holds for iss's Ready condition (for
// its current generation) and status, leaves the issuer in iss and returns
// the condition.
func waitVaultIssuer(t *testing.T, iss v1alpha1.GenericIssuer, what string, done func(*metav1.Condition, *v1alpha1.IssuerStatus) bool) *metav1.Condition {
	t.Helper()
	var cond *metav1.Condition
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, vaultWait, true, func(ctx context.Context) (bool, error) {
		if err := env.admin.Get(ctx, client.ObjectKeyFromObject(iss), iss); err != nil {
			return false, err
		}
		cond = meta.FindStatusCondition(iss.GetStatus().Conditions, v1alpha1.ConditionReady)
		if cond != nil && cond.ObservedGeneration != iss.GetGeneration() {
			return false, nil
		}
		return done(cond, iss.GetStatus()), nil
	})
	if err != nil {
		t.Fatalf("waited %s for %s to be %s: %v; Ready: %+v", vaultWait, issuerRefOf(iss), what, err, cond)
	}
	return cond
}

func vaultReady(status metav1.ConditionStatus, reason string) func(*metav1.Condition, *v1alpha1.IssuerStatus) bool {
	return func(cond *metav1.Condition, _ *v1alpha1.IssuerStatus) bool {
		return cond != nil && cond.Status == status && cond.Reason == reason
	}
}

func issuerRefOf(iss v1alpha1.GenericIssuer) request.IssuerRef {
	if iss.GetNamespace() == "" {
		return request.IssuerRef{Kind: request.KindClusterIssuer, Name: iss.GetName()}
	}
	return request.IssuerRef{Kind: request.KindIssuer, Namespace: iss.GetNamespace(), Name: iss.GetName()}
}

func signerOf(iss v1alpha1.GenericIssuer) string { return issuerRefOf(iss).SignerName() }

func createIssuer(t *testing.T, iss v1alpha1.GenericIssuer) {
	t.Helper()
	if err := env.admin.Create(t.Context(), iss); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.admin.Delete(context.Background(), iss) })
}

func createSecret(t *testing.T, ns, name string, data map[string][]byte) {
	t.Helper()
	if err := env.admin.Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: data}); err != nil {
		t.Fatal(err)
	}
}

// verifyAgainst checks that chain leads to a certificate of bundle for
// dnsName.
func verifyAgainst(t *testing.T, chain, bundle []*x509.Certificate, dnsName string) {
	t.Helper()
	roots, intermediates := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range bundle {
		roots.AddCert(c)
	}
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: intermediates, DNSName: dnsName}); err != nil {
		t.Errorf("the chain does not verify against the issuer's trust bundle: %v", err)
	}
}

func subjectsOf(certs []*x509.Certificate) []string {
	out := make([]string, len(certs))
	for i, c := range certs {
		out[i] = fmt.Sprint(c.Subject)
	}
	return out
}
