package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
	"github.com/certmint/certmint/pkg/request"
)

// Auth methods, as metrics and messages name them.
const (
	methodToken      = "token"
	methodAppRole    = "approle"
	methodKubernetes = "kubernetes"
)

// grant is a token Vault gave.
type grant struct {
	token string
	// ttl is how long the token lives from when it was granted; zero for
	// a token that never expires.
	ttl       time.Duration
	renewable bool
	// owned is true for a token a login created, which the controller
	// revokes when it is done with it; a token the user gave is theirs.
	owned bool
}

// authenticator gets a Vault token one way. It holds credentials: it is
// never logged.
type authenticator interface {
	// login gets a token; c carries none.
	login(ctx context.Context, c *vaultapi.Client) (grant, error)
	// method names the auth method.
	method() string
	// identify writes what the login is made of into h, for the session's
	// fingerprint.
	identify(h hash.Hash)
}

// TokenRequester requests ServiceAccount tokens through the TokenRequest
// API.
type TokenRequester interface {
	// RequestToken returns a token for sa that only audience accepts and
	// that expires after expiration.
	RequestToken(ctx context.Context, sa types.NamespacedName, audience string, expiration time.Duration) (string, error)
}

// ServiceAccountTokens is a TokenRequester that uses c.
func ServiceAccountTokens(c client.Client) TokenRequester {
	return serviceAccountTokens{c: c}
}

type serviceAccountTokens struct{ c client.Client }

var _ TokenRequester = serviceAccountTokens{}

func (s serviceAccountTokens) RequestToken(ctx context.Context, sa types.NamespacedName, audience string, expiration time.Duration) (string, error) {
	tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		Audiences:         []string{audience},
		ExpirationSeconds: ptr.To(int64(expiration / time.Second)),
	}}
	account := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: sa.Namespace, Name: sa.Name}}
	if err := s.c.SubResource("token").Create(ctx, account, tr); err != nil {
		return "", err
	}
	return tr.Status.Token, nil
}

// serviceAccountTokenLifetime is how long a requested ServiceAccount token
// lives: it serves one login, and the API server's minimum is ten minutes.
const serviceAccountTokenLifetime = 10 * time.Minute

// authenticator builds the authenticator auth selects, reading the Secrets
// it names in ns.
func (b *Backend) authenticator(ctx context.Context, iss v1alpha1.GenericIssuer, ns string, auth *v1alpha1.VaultAuth) (authenticator, error) {
	switch {
	case auth.TokenSecretRef != nil:
		v, err := b.secretKey(ctx, ns, *auth.TokenSecretRef)
		if err != nil {
			return nil, err
		}
		return staticToken{token: string(bytes.TrimSpace(v))}, nil
	case auth.AppRole != nil:
		v, err := b.secretKey(ctx, ns, auth.AppRole.SecretRef)
		if err != nil {
			return nil, err
		}
		return appRole{mount: mountOr(auth.AppRole.Path, methodAppRole), roleID: auth.AppRole.RoleID, secretID: string(bytes.TrimSpace(v))}, nil
	case auth.Kubernetes != nil:
		k := kubernetesAuth{mount: mountOr(auth.Kubernetes.Path, methodKubernetes), role: auth.Kubernetes.Role}
		if sa := auth.Kubernetes.ServiceAccountRef; sa != nil {
			k.serviceAccount = types.NamespacedName{Namespace: ns, Name: sa.Name}
			k.audience = sa.Audience
			if k.audience == "" {
				k.audience = DefaultAudience(issuer.RefFor(iss))
			}
			k.tokens = b.tokens
			return k, nil
		}
		v, err := b.secretKey(ctx, ns, *auth.Kubernetes.SecretRef)
		if err != nil {
			return nil, err
		}
		k.jwt = string(bytes.TrimSpace(v))
		return k, nil
	}
	return nil, &issuer.NotReadyError{Reason: v1alpha1.ReasonError, Message: "spec.vault.auth sets no auth method"}
}

// DefaultAudience is the audience of the ServiceAccount tokens requested
// for ref when its spec names none: it names the issuer, so that a Vault
// role bound to it accepts no other issuer's tokens, and it is not the API
// server's, so the tokens are no Kubernetes credential.
func DefaultAudience(ref request.IssuerRef) string {
	if ref.Kind == request.KindClusterIssuer {
		return "vault://" + ref.Name
	}
	return "vault://" + ref.Namespace + "/" + ref.Name
}

// mountOr is path, or def for an unset path (the API server defaults it).
func mountOr(path, def string) string {
	if path == "" {
		return def
	}
	return path
}

// staticToken is a token the user gave. "Logging in" looks it up, to learn
// whether it is valid, how long it lives and whether it can be renewed.
type staticToken struct{ token string }

func (staticToken) method() string { return methodToken }

func (s staticToken) identify(h hash.Hash) { writeParts(h, methodToken, s.token) }

func (s staticToken) login(ctx context.Context, c *vaultapi.Client) (grant, error) {
	withToken, err := c.CloneWithHeaders()
	if err != nil {
		return grant{}, err
	}
	withToken.SetToken(s.token)
	withToken.SetWrappingLookupFunc(noWrapping)
	secret, err := withToken.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return grant{}, loginError("looking up the token", err)
	}
	ttl, err := secret.TokenTTL()
	if err != nil {
		return grant{}, fmt.Errorf("reading the token's TTL: %w", err)
	}
	renewable, err := secret.TokenIsRenewable()
	if err != nil {
		return grant{}, fmt.Errorf("reading whether the token is renewable: %w", err)
	}
	return grant{token: s.token, ttl: ttl, renewable: renewable}, nil
}

// appRole logs in with an AppRole.
type appRole struct {
	mount, roleID, secretID string
}

func (appRole) method() string { return methodAppRole }

func (a appRole) identify(h hash.Hash) { writeParts(h, methodAppRole, a.mount, a.roleID, a.secretID) }

func (a appRole) login(ctx context.Context, c *vaultapi.Client) (grant, error) {
	path := "auth/" + a.mount + "/login"
	secret, err := c.Logical().WriteWithContext(ctx, path, map[string]any{"role_id": a.roleID, "secret_id": a.secretID})
	return grantOf(path, secret, err)
}

// kubernetesAuth logs in with a ServiceAccount token: a fresh one from the
// TokenRequest API for serviceAccount, or jwt, read from a Secret.
type kubernetesAuth struct {
	mount, role string

	serviceAccount types.NamespacedName
	audience       string
	tokens         TokenRequester

	jwt string
}

func (kubernetesAuth) method() string { return methodKubernetes }

func (k kubernetesAuth) identify(h hash.Hash) {
	writeParts(h, methodKubernetes, k.mount, k.role, k.serviceAccount.String(), k.audience, k.jwt)
}

func (k kubernetesAuth) login(ctx context.Context, c *vaultapi.Client) (grant, error) {
	jwt := k.jwt
	if jwt == "" {
		var err error
		if jwt, err = k.tokens.RequestToken(ctx, k.serviceAccount, k.audience, serviceAccountTokenLifetime); err != nil {
			if apierrors.IsForbidden(err) || apierrors.IsNotFound(err) {
				return grant{}, &issuer.NotReadyError{Reason: ReasonServiceAccountToken, Message: fmt.Sprintf(
					"requesting a token for ServiceAccount %s: %v; the ServiceAccount must exist and the controller needs create on serviceaccounts/token for it (see the Vault section of docs/issuers.md)",
					k.serviceAccount, err)}
			}
			return grant{}, fmt.Errorf("requesting a token for ServiceAccount %s: %w", k.serviceAccount, err)
		}
	}
	path := "auth/" + k.mount + "/login"
	secret, err := c.Logical().WriteWithContext(ctx, path, map[string]any{"role": k.role, "jwt": jwt})
	return grantOf(path, secret, err)
}

// grantOf reads the token of a login's answer.
func grantOf(path string, secret *vaultapi.Secret, err error) (grant, error) {
	if err != nil {
		return grant{}, loginError("logging in at "+path, err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return grant{}, &issuer.NotReadyError{Reason: ReasonLoginFailed, Message: fmt.Sprintf("Vault answered the login at %s without a token; is an auth method mounted there?", path)}
	}
	return grant{
		token:     secret.Auth.ClientToken,
		ttl:       time.Duration(secret.Auth.LeaseDuration) * time.Second,
		renewable: secret.Auth.Renewable,
		owned:     true,
	}, nil
}

// loginError is a refused login as an *issuer.NotReadyError with Vault's
// own words, and anything else (Vault unreachable, sealed, failing) as is,
// to be tried again.
func loginError(what string, err error) error {
	var resp *vaultapi.ResponseError
	if errors.As(err, &resp) && refused(resp.StatusCode) {
		return &issuer.NotReadyError{Reason: ReasonLoginFailed, Message: fmt.Sprintf("%s: Vault answered %d: %s", what, resp.StatusCode, vaultMessage(resp))}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// refused reports whether an HTTP status means Vault refused the request
// as it stands, rather than failed to handle it: a 4xx other than those
// Vault uses for "try again" (a rate limit quota, a replica behind).
func refused(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusTooManyRequests && status != http.StatusPreconditionFailed
}

// noWrapping turns off response wrapping, which the library would take
// from the controller's environment (VAULT_WRAP_TTL): an issuer's spec
// alone says how to talk to its Vault.
func noWrapping(_, _ string) string { return "" }

// writeParts writes parts into h, each with its length, so that no other
// parts write the same bytes.
func writeParts(h hash.Hash, parts ...string) {
	for _, p := range parts {
		h.Write(fmt.Appendf(nil, "%d:%s", len(p), p))
	}
}

// What holds credentials prints and logs without them, should it ever be
// printed or logged.

func (g grant) String() string {
	return fmt.Sprintf("Vault token (ttl %s, renewable %t)", g.ttl, g.renewable)
}

// MarshalLog is what logr logs of g.
func (g grant) MarshalLog() any { return g.String() }

func (s staticToken) String() string { return "a Vault token from a Secret" }

// MarshalLog is what logr logs of s.
func (s staticToken) MarshalLog() any { return s.String() }

func (a appRole) String() string {
	return fmt.Sprintf("AppRole login at auth/%s/login as role ID %s", a.mount, a.roleID)
}

// MarshalLog is what logr logs of a.
func (a appRole) MarshalLog() any { return a.String() }

func (k kubernetesAuth) String() string {
	if k.jwt != "" {
		return fmt.Sprintf("Kubernetes login at auth/%s/login as role %s with a token from a Secret", k.mount, k.role)
	}
	return fmt.Sprintf("Kubernetes login at auth/%s/login as role %s with tokens of ServiceAccount %s for audience %s", k.mount, k.role, k.serviceAccount, k.audience)
}

// MarshalLog is what logr logs of k.
func (k kubernetesAuth) MarshalLog() any { return k.String() }
