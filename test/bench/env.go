package main

import (
	"context"
	"os"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/stack"
)

const (
	certmintNS = stack.Namespace
	workloadNS = "bench"
	workloadSA = "web"
	issuerName = "bench-ca"
)

// env is the stack (a control plane with the controller and one node's
// driver, both the real binaries with the RBAC of deploy/), a namespace
// for the workload pods and a CA ClusterIssuer.
type env struct {
	*stack.Stack
	logDir string
}

// runControlPlane starts the env and runs the parts measured on it: the
// driver's publishes and renewal storm, then Certificates, which come last
// so that the driver's figures are those of a controller that had only
// its requests to serve.
func runControlPlane(ctx context.Context, opts options, res *results) error {
	dir, err := os.MkdirTemp("", "certmint-bench-")
	if err != nil {
		return err
	}
	e, err := startEnv(ctx, dir, opts)
	defer func() {
		if e != nil {
			e.Stop()
		}
		unmountUnder(dir)
		os.RemoveAll(dir)
	}()
	if err != nil {
		return err
	}
	if opts.volumes > 0 {
		if err := runDriverBench(ctx, e, opts, res); err != nil {
			return err
		}
	}
	if opts.certificates > 0 {
		if res.certificates, err = runCertificateBench(ctx, e, opts); err != nil {
			return err
		}
	}
	// Last, so that Vault's load is in no other figure.
	if opts.vault && opts.volumes > 0 {
		if res.vault, err = runVaultBench(ctx, e, opts); err != nil {
			return err
		}
	}
	return nil
}

// startEnv starts everything in dir, which the caller removes, and writes
// the logs to opts.logDir.
func startEnv(ctx context.Context, dir string, opts options) (*env, error) {
	sopts := stack.Options{Dir: dir, LogDir: opts.logDir, Node: "bench-node", Symbols: opts.profile, DriverFlags: opts.driverFlags, Logf: logf}
	if opts.profile {
		sopts.ExtraAPIServerArgs = []string{"--profiling=true"}
	}
	s, err := stack.Start(ctx, sopts)
	if err != nil {
		return nil, err
	}
	e := &env{Stack: s, logDir: opts.logDir}
	if _, err := e.Admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: workloadNS}}, metav1.CreateOptions{}); err != nil {
		return e, err
	}
	if _, err := e.Admin.CoreV1().ServiceAccounts(workloadNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: workloadSA}}, metav1.CreateOptions{}); err != nil {
		return e, err
	}
	logf("creating the CA ClusterIssuer %s", issuerName)
	if _, err := deploy.CAClusterIssuer(ctx, e.CP.Config, issuerName); err != nil {
		return e, err
	}
	return e, nil
}
