package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/test/vaultdev"
)

// vaultIssuerName is the Vault ClusterIssuer measured next to the CA one.
const vaultIssuerName = "bench-vault"

// vaultResults are the figures of the Vault ClusterIssuer.
type vaultResults struct {
	serial, concurrent publishRun
	// logins and signatures are what Vault's audit log shows for the
	// whole phase, warm-up included.
	logins, signatures int
}

// runVaultBench publishes volumes from a Vault ClusterIssuer, one at a time
// and opts.concurrency at a time, as runDriverBench does from the CA one.
// Vault is a dev server on loopback, logged in to with AppRole; its audit
// log counts the logins.
func runVaultBench(ctx context.Context, e *env, opts options) (*vaultResults, error) {
	logf("starting a Vault dev server")
	v, err := vaultdev.Start(ctx, vaultdev.Options{Dir: filepath.Join(opts.logDir, "vault")})
	if err != nil {
		return nil, err
	}
	defer v.Stop()
	if err := createVaultIssuer(ctx, e, v); err != nil {
		return nil, err
	}

	// The publishes unpublish each run at once, so no renewal falls in the
	// phase.
	renewBefore := certDuration / 2
	logf("creating %d pods for the Vault issuer", opts.warmup+2*opts.volumes)
	warm, err := createVolumes(ctx, e, "vault-warmup", opts.warmup)
	if err != nil {
		return nil, err
	}
	serial, err := createVolumes(ctx, e, "vault-serial", opts.volumes)
	if err != nil {
		return nil, err
	}
	concurrent, err := createVolumes(ctx, e, "vault-concurrent", opts.volumes)
	if err != nil {
		return nil, err
	}
	res := &vaultResults{}
	for _, run := range []struct {
		what        string
		vols        []volume
		concurrency int
		into        *publishRun
	}{
		{"warming up", warm, 1, nil},
		{"one at a time", serial, 1, &res.serial},
		{fmt.Sprintf("%d at a time", opts.concurrency), concurrent, opts.concurrency, &res.concurrent},
	} {
		logf("Vault issuer: publishing %d volumes %s", len(run.vols), run.what)
		r, err := publishAll(ctx, e.Driver.Node, vaultIssuerName, run.vols, run.concurrency, renewBefore)
		if err != nil {
			return nil, err
		}
		if run.into != nil {
			*run.into = r
		}
		if err := unpublishAll(ctx, e.Driver.Node, run.vols, opts.concurrency); err != nil {
			return nil, err
		}
	}
	if res.logins, err = v.Count("auth/approle/login"); err != nil {
		return nil, err
	}
	if res.signatures, err = v.Count("pki/sign/certmint"); err != nil {
		return nil, err
	}
	return res, nil
}

// createVaultIssuer sets up a PKI role and an AppRole in v, and a
// ClusterIssuer signing with them whose default policy grants the pods
// what publishRequest asks for, and waits until it is Ready.
func createVaultIssuer(ctx context.Context, e *env, v *vaultdev.Server) error {
	p, err := v.EnablePKI(ctx, "pki")
	if err != nil {
		return err
	}
	err = v.WriteRole(ctx, p, "certmint", map[string]any{
		"allowed_domains": "svc", "allow_subdomains": true,
		"allowed_uri_sans": "spiffe://cluster.local/*",
		"require_cn":       false, "key_type": "any", "max_ttl": "1h", "no_store": true,
	})
	if err != nil {
		return fmt.Errorf("writing the Vault role: %w", err)
	}
	if err := v.Client.Sys().PutPolicyWithContext(ctx, "certmint", `path "pki/sign/certmint" { capabilities = ["update"] }`); err != nil {
		return err
	}
	if err := v.EnableAuth(ctx, "approle", "approle"); err != nil {
		return err
	}
	roleID, secretID, err := v.AppRole(ctx, "approle", "certmint", map[string]any{"token_policies": "certmint", "token_ttl": "1h"})
	if err != nil {
		return err
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(e.CP.Config, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: certmintNS, Name: vaultIssuerName},
		Data:       map[string][]byte{"secretId": []byte(secretID)},
	}
	if err := c.Create(ctx, secret); err != nil {
		return err
	}
	iss := &v1alpha1.ClusterIssuer{
		ObjectMeta: metav1.ObjectMeta{Name: vaultIssuerName},
		Spec: v1alpha1.IssuerSpec{Vault: &v1alpha1.VaultIssuer{
			Server:   v.Addr,
			Path:     "pki/sign/certmint",
			CABundle: string(v.CACert),
			Auth: v1alpha1.VaultAuth{AppRole: &v1alpha1.VaultAppRoleAuth{
				RoleID:    roleID,
				SecretRef: v1alpha1.IssuerSecretKeySelector{Name: vaultIssuerName, Key: "secretId"},
			}},
		}},
	}
	logf("creating the Vault ClusterIssuer %s", vaultIssuerName)
	if err := c.Create(ctx, iss); err != nil {
		return err
	}
	var cond *metav1.Condition
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, types.NamespacedName{Name: vaultIssuerName}, iss); err != nil {
			return false, err
		}
		cond = meta.FindStatusCondition(iss.Status.Conditions, v1alpha1.ConditionReady)
		return cond != nil && cond.Status == metav1.ConditionTrue, nil
	})
	if err != nil {
		return fmt.Errorf("the Vault ClusterIssuer is not Ready: %w; its condition: %+v", err, cond)
	}
	return nil
}

// rows are the figures of the Vault issuer, next to the CA issuer's of
// the same run (ca, empty when that did not run).
func (v *vaultResults) rows(row func(measure, result, ca string), ca *results) {
	caOf := func(f func() string) string {
		if ca.volumes == 0 {
			return "–"
		}
		return f()
	}
	s, c := v.serial, v.concurrent
	row(fmt.Sprintf("NodePublishVolume → files ready, concurrency 1 (N=%d): p50 / p90 / p99", len(s.latencies)),
		distribution(s.latencies), caOf(func() string { return distribution(ca.serial.latencies) }))
	row(fmt.Sprintf("NodePublishVolume → files ready, concurrency %d (N=%d): p50 / p90 / p99", c.concurrency, len(c.latencies)),
		distribution(c.latencies), caOf(func() string { return distribution(ca.concurrent.latencies) }))
	row(fmt.Sprintf("issuances per second at concurrency %d", c.concurrency),
		fmt.Sprintf("%.0f/s", c.perSecond()), caOf(func() string { return fmt.Sprintf("%.0f/s", ca.concurrent.perSecond()) }))
	row("Vault logins for the signatures of the phase (Vault's audit log)",
		fmt.Sprintf("%d for %d signatures", v.logins, v.signatures), "")
}
