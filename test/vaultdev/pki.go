package vaultdev

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	vaultapi "github.com/hashicorp/vault/api"
)

// PKI is a PKI secrets engine that signs with an intermediate CA, whose
// root is in another mount, as production setups keep the root apart.
type PKI struct {
	// Mount is where the intermediate signs; RootMount holds the root.
	Mount, RootMount string
	Root             *x509.Certificate
	// Intermediate is the mount's default issuer.
	Intermediate *x509.Certificate
}

// EnablePKI mounts a root CA at <mount>-root and, at mount, an intermediate
// it signed, which the mount signs with by default. The mount knows the
// root too, so Vault names it in ca_chain.
func (s *Server) EnablePKI(ctx context.Context, mount string) (*PKI, error) {
	p := &PKI{Mount: mount, RootMount: mount + "-root"}
	for path, maxTTL := range map[string]string{p.RootMount: "87600h", p.Mount: "43800h"} {
		err := s.Client.Sys().MountWithContext(ctx, path, &vaultapi.MountInput{Type: "pki", Config: vaultapi.MountConfigInput{MaxLeaseTTL: maxTTL}})
		if err != nil {
			return nil, fmt.Errorf("mounting %s: %w", path, err)
		}
	}
	root, err := s.Client.Logical().WriteWithContext(ctx, p.RootMount+"/root/generate/internal", map[string]any{
		"common_name": mount + " test root", "key_type": "ec", "ttl": "87600h",
	})
	if err != nil {
		return nil, fmt.Errorf("generating the root: %w", err)
	}
	if p.Root, err = certificateField(root, "certificate"); err != nil {
		return nil, err
	}
	if p.Intermediate, err = s.NewIntermediate(ctx, p); err != nil {
		return nil, err
	}
	return p, nil
}

// NewIntermediate makes a new intermediate CA, signed by p's root, the
// default issuer of p's mount: a rotation of the CA the mount signs with.
func (s *Server) NewIntermediate(ctx context.Context, p *PKI) (*x509.Certificate, error) {
	gen, err := s.Client.Logical().WriteWithContext(ctx, p.Mount+"/intermediate/generate/internal", map[string]any{
		"common_name": p.Mount + " test intermediate", "key_type": "ec",
	})
	if err != nil {
		return nil, fmt.Errorf("generating an intermediate: %w", err)
	}
	csr, _ := gen.Data["csr"].(string)
	signedSecret, err := s.Client.Logical().WriteWithContext(ctx, p.RootMount+"/root/sign-intermediate", map[string]any{
		"csr": csr, "common_name": p.Mount + " test intermediate", "ttl": "43800h",
	})
	if err != nil {
		return nil, fmt.Errorf("signing the intermediate: %w", err)
	}
	intermediate, err := certificateField(signedSecret, "certificate")
	if err != nil {
		return nil, err
	}
	imported, err := s.Client.Logical().WriteWithContext(ctx, p.Mount+"/intermediate/set-signed", map[string]any{
		"certificate": string(encodeCert(intermediate)) + string(encodeCert(p.Root)),
	})
	if err != nil {
		return nil, fmt.Errorf("importing the intermediate: %w", err)
	}
	ids, _ := imported.Data["imported_issuers"].([]any)
	for _, id := range ids {
		issuer, err := s.Client.Logical().ReadWithContext(ctx, fmt.Sprintf("%s/issuer/%s/json", p.Mount, id))
		if err != nil {
			return nil, err
		}
		if c, err := certificateField(issuer, "certificate"); err != nil || !c.Equal(intermediate) {
			continue
		}
		if _, err := s.Client.Logical().WriteWithContext(ctx, p.Mount+"/config/issuers", map[string]any{"default": id}); err != nil {
			return nil, fmt.Errorf("making the intermediate the default issuer: %w", err)
		}
		return intermediate, nil
	}
	return nil, fmt.Errorf("vault imported issuers %v, none of them the intermediate", ids)
}

// WriteRole writes a role of p's mount.
func (s *Server) WriteRole(ctx context.Context, p *PKI, role string, settings map[string]any) error {
	_, err := s.Client.Logical().WriteWithContext(ctx, p.Mount+"/roles/"+role, settings)
	return err
}

// EnableAuth mounts an auth method of type typ at path.
func (s *Server) EnableAuth(ctx context.Context, path, typ string) error {
	return s.Client.Sys().EnableAuthWithOptionsWithContext(ctx, path, &vaultapi.EnableAuthOptions{Type: typ})
}

// AppRole writes an AppRole of the AppRole method at mount with settings,
// and returns its role ID and a new secret ID.
func (s *Server) AppRole(ctx context.Context, mount, role string, settings map[string]any) (roleID, secretID string, err error) {
	base := "auth/" + mount + "/role/" + role
	if _, err := s.Client.Logical().WriteWithContext(ctx, base, settings); err != nil {
		return "", "", fmt.Errorf("writing AppRole %s: %w", role, err)
	}
	id, err := s.Client.Logical().ReadWithContext(ctx, base+"/role-id")
	if err != nil {
		return "", "", err
	}
	secret, err := s.Client.Logical().WriteWithContext(ctx, base+"/secret-id", nil)
	if err != nil {
		return "", "", err
	}
	roleID, _ = id.Data["role_id"].(string)
	secretID, _ = secret.Data["secret_id"].(string)
	if roleID == "" || secretID == "" {
		return "", "", errors.New("vault returned no role ID or secret ID")
	}
	return roleID, secretID, nil
}

func certificateField(secret *vaultapi.Secret, field string) (*x509.Certificate, error) {
	if secret == nil {
		return nil, errors.New("vault answered nothing")
	}
	text, _ := secret.Data[field].(string)
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, fmt.Errorf("vault's %s is not PEM", field)
	}
	return x509.ParseCertificate(block.Bytes)
}
