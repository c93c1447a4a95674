package vault

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

func TestHealthTellsWhatToDo(t *testing.T) {
	for _, c := range []struct {
		name       string
		health     vaultapi.HealthResponse
		wantReason string
		wantText   string
		wantNote   string
	}{
		{name: "an active node signs", health: vaultapi.HealthResponse{Initialized: true}},
		{name: "a standby forwards, so it signs", health: vaultapi.HealthResponse{Initialized: true, Standby: true}, wantNote: "standby"},
		{name: "a performance standby forwards signing, so it signs", health: vaultapi.HealthResponse{Initialized: true, Standby: true, PerformanceStandby: true}, wantNote: "performance standby"},
		{name: "a sealed Vault must be unsealed", health: vaultapi.HealthResponse{Initialized: true, Sealed: true}, wantReason: ReasonSealed, wantText: "unseal"},
		{name: "an uninitialized Vault must be initialized", health: vaultapi.HealthResponse{Sealed: true}, wantReason: ReasonNotInitialized, wantText: "initialize"},
		{name: "a DR secondary serves nothing", health: vaultapi.HealthResponse{Initialized: true, Standby: true, ReplicationDRMode: "secondary"}, wantReason: ReasonDRSecondary, wantText: "primary"},
	} {
		t.Run(c.name, func(t *testing.T) {
			problem := healthProblem("https://vault:8200", &c.health)
			switch {
			case c.wantReason == "" && problem != nil:
				t.Fatalf("healthProblem = %v, want none", problem)
			case c.wantReason != "" && (problem == nil || problem.Reason != c.wantReason || !strings.Contains(problem.Message, c.wantText)):
				t.Fatalf("healthProblem = %+v, want reason %s saying %q", problem, c.wantReason, c.wantText)
			}
			if c.wantReason != "" {
				return
			}
			if note := healthNote(&c.health); !strings.Contains(note, c.wantNote) || (c.wantNote == "") != (note == "") {
				t.Errorf("healthNote = %q, want one mentioning %q", note, c.wantNote)
			}
		})
	}
}

func TestRefusedIsA4xxVaultDoesNotAskToRetry(t *testing.T) {
	for status, want := range map[int]bool{400: true, 403: true, 404: true, 412: false, 429: false, 500: false, 503: false} {
		if got := refused(status); got != want {
			t.Errorf("refused(%d) = %t, want %t", status, got, want)
		}
	}
}

func TestDefaultAudienceNamesTheIssuer(t *testing.T) {
	if got := DefaultAudience(request.IssuerRef{Kind: request.KindIssuer, Namespace: "team-a", Name: "vault"}); got != "vault://team-a/vault" {
		t.Errorf("Issuer audience = %s", got)
	}
	if got := DefaultAudience(request.IssuerRef{Kind: request.KindClusterIssuer, Name: "vault"}); got != "vault://vault" {
		t.Errorf("ClusterIssuer audience = %s", got)
	}
}

func TestFingerprintChangesWithWhatASessionIsMadeOf(t *testing.T) {
	base := func() *config {
		return &config{server: "https://vault:8200", caPEM: []byte("ca"), auth: appRole{mount: "approle", roleID: "r", secretID: "s"}}
	}
	want := base().fingerprint()
	if base().fingerprint() != want {
		t.Fatal("the same config has two fingerprints")
	}
	for name, change := range map[string]func(*config){
		"server":       func(c *config) { c.server = "https://other:8200" },
		"namespace":    func(c *config) { c.namespace = "team-a" },
		"CA bundle":    func(c *config) { c.caPEM = []byte("other") },
		"client cert":  func(c *config) { c.clientCertPEM = []byte("cert") },
		"secret ID":    func(c *config) { c.auth = appRole{mount: "approle", roleID: "r", secretID: "t"} },
		"auth method":  func(c *config) { c.auth = staticToken{token: "s"} },
		"parts shifts": func(c *config) { c.auth = appRole{mount: "approl", roleID: "er", secretID: "s"} },
	} {
		c := base()
		change(c)
		if c.fingerprint() == want {
			t.Errorf("changing the %s keeps the fingerprint", name)
		}
	}
}

func TestSecretRefsAreInTheIssuersNamespace(t *testing.T) {
	b, err := New(Options{Secrets: &issuer.Secrets{}, Tokens: ServiceAccountTokens(nil), ClusterResourceNamespace: "certmint"})
	if err != nil {
		t.Fatal(err)
	}
	spec := v1alpha1.IssuerSpec{Vault: &v1alpha1.VaultIssuer{
		CABundleSecretRef:           &v1alpha1.IssuerSecretKeySelector{Name: "vault-ca", Key: "ca.crt"},
		ClientCertificateSecretName: "vault-client",
		Auth:                        v1alpha1.VaultAuth{AppRole: &v1alpha1.VaultAppRoleAuth{RoleID: "r", SecretRef: v1alpha1.IssuerSecretKeySelector{Name: "approle", Key: "secretId"}}},
	}}
	namespaced := &v1alpha1.Issuer{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "vault"}, Spec: spec}
	cluster := &v1alpha1.ClusterIssuer{ObjectMeta: metav1.ObjectMeta{Name: "vault"}, Spec: spec}
	for iss, ns := range map[v1alpha1.GenericIssuer]string{namespaced: "team-a", cluster: "certmint"} {
		want := []types.NamespacedName{{Namespace: ns, Name: "vault-ca"}, {Namespace: ns, Name: "vault-client"}, {Namespace: ns, Name: "approle"}}
		if got := b.Kind().Secrets(iss); !slices.Equal(got, want) {
			t.Errorf("Secrets of %s = %v, want %v", issuer.RefFor(iss), got, want)
		}
	}
}

func TestNewRefusesMissingOptions(t *testing.T) {
	full := Options{Secrets: &issuer.Secrets{}, Tokens: ServiceAccountTokens(nil), ClusterResourceNamespace: "certmint"}
	for name, change := range map[string]func(*Options){
		"Secrets":                  func(o *Options) { o.Secrets = nil },
		"Tokens":                   func(o *Options) { o.Tokens = nil },
		"ClusterResourceNamespace": func(o *Options) { o.ClusterResourceNamespace = "" },
	} {
		o := full
		change(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("New without %s = %v, want an error naming it", name, err)
		}
	}
	b, err := New(full)
	if err != nil {
		t.Fatal(err)
	}
	if b.checkInterval != DefaultCheckInterval {
		t.Errorf("default check interval = %s", b.checkInterval)
	}
}

func TestCredentialsNeverPrint(t *testing.T) {
	const secret = "s.very-secret"
	for _, v := range []any{
		&config{server: "https://vault:8200", clientKeyPEM: []byte(secret), auth: appRole{mount: "approle", roleID: "r", secretID: secret}},
		staticToken{token: secret},
		kubernetesAuth{mount: "kubernetes", role: "r", jwt: secret},
		grant{token: secret, ttl: time.Hour},
		&token{grant: grant{token: secret}},
	} {
		for _, format := range []string{"%v", "%+v", "%s"} {
			if got := fmt.Sprintf(format, v); strings.Contains(got, secret) {
				t.Errorf("%s of a %T shows the credential: %s", format, v, got)
			}
		}
		if m, ok := v.(interface{ MarshalLog() any }); !ok || strings.Contains(fmt.Sprint(m.MarshalLog()), secret) {
			t.Errorf("a %T logs the credential, or has no MarshalLog", v)
		}
	}
}
