// Package v1alpha1 is the certmint.io/v1alpha1 API: Issuer and ClusterIssuer.
//
// An issuer says how certificates for its signer name are made (one backend:
// selfSigned or ca) and which certificates pods may ask for (policy).
//
// +kubebuilder:object:generate=true
// +groupName=certmint.io
package v1alpha1
