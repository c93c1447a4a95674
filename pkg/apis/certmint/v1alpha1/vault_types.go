package v1alpha1

// VaultIssuer signs with a PKI secrets engine of HashiCorp Vault. The
// controller sends Vault the certificate request the requester signed, so
// the key never leaves where it was made: it uses a role's sign endpoint,
// never issue, with which Vault would generate the key itself.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.caBundle) && has(self.caBundleSecretRef))",message="set at most one of caBundle and caBundleSecretRef"
type VaultIssuer struct {
	// Server is the URL of Vault, e.g. https://vault.example.com:8200.
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() == 'https'",message="must be an https URL: the controller sends Vault its token and every certificate request"
	// +kubebuilder:validation:XValidation:rule="!self.contains('@')",message="must hold no credentials: the status shows the URL, and auth says how to log in"
	Server string `json:"server"`

	// Path is the sign endpoint of a PKI role: <mount>/sign/<role>, or
	// <mount>/issuer/<issuer>/sign/<role> to sign with another issuer of
	// the mount than its default one.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/sign/[A-Za-z0-9_.@-]+$')",message="must be <mount>/sign/<role> or <mount>/issuer/<issuer>/sign/<role>: certmint sends Vault the requester's certificate request, and never uses issue/, with which Vault would generate the key"
	Path string `json:"path"`

	// Namespace is the Vault Enterprise namespace of the mount and the
	// auth method, sent as X-Vault-Namespace; empty for the root namespace.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Namespace string `json:"namespace,omitempty"`

	// CABundle is the PEM of the CA certificates to trust for Vault's TLS;
	// without it and caBundleSecretRef the system's roots are used.
	// +optional
	// +kubebuilder:validation:MaxLength=65536
	CABundle string `json:"caBundle,omitempty"`

	// CABundleSecretRef names a key of a Secret holding the PEM of the CA
	// certificates to trust for Vault's TLS.
	// +optional
	CABundleSecretRef *IssuerSecretKeySelector `json:"caBundleSecretRef,omitempty"`

	// ClientCertificateSecretName names a kubernetes.io/tls Secret whose
	// certificate and key the controller presents to Vault, for a listener
	// that requires client certificates (mutual TLS).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid Secret name"
	ClientCertificateSecretName string `json:"clientCertificateSecretName,omitempty"`

	// Auth is how the controller logs in to Vault. It logs in once per
	// issuer, renews the token while it may, and logs in again when Vault
	// refuses to renew it.
	Auth VaultAuth `json:"auth"`
}

// VaultAuth chooses exactly one way to log in to Vault. The Secrets and
// ServiceAccounts it names are in the Issuer's namespace, or for a
// ClusterIssuer in the controller's cluster resource namespace.
//
// +kubebuilder:validation:XValidation:rule="[has(self.tokenSecretRef), has(self.appRole), has(self.kubernetes)].filter(x, x).size() == 1",message="exactly one of tokenSecretRef, appRole or kubernetes must be set"
type VaultAuth struct {
	// TokenSecretRef names a key of a Secret holding a Vault token. The
	// controller renews it while Vault allows; a periodic token lives as
	// long as it is renewed.
	// +optional
	TokenSecretRef *IssuerSecretKeySelector `json:"tokenSecretRef,omitempty"`

	// AppRole logs in with an AppRole's role ID and secret ID.
	// +optional
	AppRole *VaultAppRoleAuth `json:"appRole,omitempty"`

	// Kubernetes logs in with a Kubernetes ServiceAccount token, which
	// Vault checks with the API server (TokenReview).
	// +optional
	Kubernetes *VaultKubernetesAuth `json:"kubernetes,omitempty"`
}

// VaultAppRoleAuth logs in with an AppRole.
type VaultAppRoleAuth struct {
	// Path is where the AppRole auth method is mounted.
	// +optional
	// +kubebuilder:default=approle
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$')",message="must be a mount path such as approle"
	Path string `json:"path,omitempty"`

	// RoleID is the role_id of the AppRole; it is not a secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	RoleID string `json:"roleId"`

	// SecretRef names a key of a Secret holding the AppRole's secret_id.
	SecretRef IssuerSecretKeySelector `json:"secretRef"`
}

// VaultKubernetesAuth logs in with a ServiceAccount token.
//
// +kubebuilder:validation:XValidation:rule="[has(self.serviceAccountRef), has(self.secretRef)].filter(x, x).size() == 1",message="exactly one of serviceAccountRef or secretRef must be set"
type VaultKubernetesAuth struct {
	// Path is where the Kubernetes auth method is mounted.
	// +optional
	// +kubebuilder:default=kubernetes
	// +kubebuilder:validation:MaxLength=256
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$')",message="must be a mount path such as kubernetes"
	Path string `json:"path,omitempty"`

	// Role is the Vault role of the Kubernetes auth method to log in as.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Role string `json:"role"`

	// ServiceAccountRef names a ServiceAccount for which the controller
	// requests a short-lived token, bound to an audience, through the
	// TokenRequest API each time it logs in. The controller must be
	// allowed to create serviceaccounts/token for it (docs/issuers.md).
	// +optional
	ServiceAccountRef *VaultServiceAccountRef `json:"serviceAccountRef,omitempty"`

	// SecretRef names a key of a Secret holding a ServiceAccount token,
	// such as a long-lived token Secret. Prefer serviceAccountRef: its
	// tokens expire within minutes and serve Vault alone.
	// +optional
	SecretRef *IssuerSecretKeySelector `json:"secretRef,omitempty"`
}

// VaultServiceAccountRef is a ServiceAccount to request tokens for.
type VaultServiceAccountRef struct {
	// Name of the ServiceAccount.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="!format.dns1123Subdomain().validate(self).hasValue()",message="must be a valid ServiceAccount name"
	Name string `json:"name"`

	// Audience is the audience of the tokens, which the Vault role must
	// name in its audience setting. The default is vault://<namespace>/<name>
	// for an Issuer and vault://<name> for a ClusterIssuer, so a token
	// requested for one issuer is good for no other issuer's Vault role, and
	// never for the Kubernetes API.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Audience string `json:"audience,omitempty"`
}
