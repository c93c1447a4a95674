// Command controller approves, denies and signs certmint certificate
// requests and reconciles Issuers and ClusterIssuers.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/certmint/certmint/pkg/controller"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "controller:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		opts       controller.Options
		kubeconfig string
		qps        float64
		burst      int
		zapOpts    zap.Options
	)
	fs := flag.CommandLine
	fs.StringVar(&kubeconfig, "kubeconfig", "", "Path to a kubeconfig; empty means the in-cluster configuration.")
	fs.Float64Var(&qps, "kube-api-qps", 500, "Requests per second to the API server; each issuance takes two writes.")
	fs.IntVar(&burst, "kube-api-burst", 1000, "Burst of requests to the API server.")
	fs.StringVar(&opts.DriverNamespace, "driver-namespace", "certmint", "Namespace of the certmint driver's ServiceAccount and pods.")
	fs.StringVar(&opts.DriverServiceAccount, "driver-service-account", "certmint-driver", "The driver's ServiceAccount: the only requester approved.")
	fs.StringVar(&opts.DriverDaemonSet, "driver-daemonset", controller.DefaultDriverDaemonSet, "The driver's DaemonSet in --driver-namespace: only its pods may request.")
	fs.StringVar(&opts.ClusterResourceNamespace, "cluster-resource-namespace", "certmint", "Namespace of ClusterIssuer Secrets and generated selfSigned roots.")
	fs.StringVar(&opts.ClusterDomain, "cluster-domain", controller.DefaultClusterDomain, "The cluster's DNS domain, for ${CLUSTER_DOMAIN} in policies.")
	fs.StringVar(&opts.TrustDomain, "trust-domain", "", "SPIFFE trust domain, for ${TRUST_DOMAIN} in policies; defaults to --cluster-domain.")
	fs.BoolVar(&opts.LeaderElect, "leader-elect", true, "Elect a leader so only one replica acts at a time.")
	fs.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "", "Namespace of the leader election Lease; defaults to --cluster-resource-namespace.")
	fs.DurationVar(&opts.LeaseDuration, "leader-elect-lease-duration", controller.DefaultLeaseDuration, "How long a standby waits before taking over a lease that is not renewed.")
	fs.DurationVar(&opts.RenewDeadline, "leader-elect-renew-deadline", controller.DefaultRenewDeadline, "How long the leader keeps trying to renew before it gives up leading.")
	fs.DurationVar(&opts.RetryPeriod, "leader-elect-retry-period", controller.DefaultRetryPeriod, "How often leader election is retried.")
	fs.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":9402", "Address serving /metrics; 0 disables it.")
	fs.StringVar(&opts.ProbeAddr, "health-probe-bind-address", ":9403", "Address serving /healthz and /readyz; 0 disables it.")
	fs.DurationVar(&opts.CleanupGrace, "csr-cleanup-grace", time.Hour, "How long issued, denied and failed requests are kept before they are deleted.")
	fs.DurationVar(&opts.PendingMaxAge, "csr-pending-max-age", 24*time.Hour, "How long a request may stay undecided before it is deleted.")
	fs.IntVar(&opts.Workers, "csr-workers", 16, "Requests handled at once.")
	fs.StringVar(&opts.ACMEHTTP01Addr, "acme-http01-address", controller.DefaultACMEHTTP01Addr, "Address serving ACME HTTP-01 challenges on every replica, behind the solver Service; 0 disables it.")
	fs.StringVar(&opts.ACMEHTTP01Service, "acme-http01-service", controller.DefaultACMEHTTP01Service, "The solver Service in --cluster-resource-namespace, which the Ingresses routing ACME HTTP-01 challenges send them to.")
	fs.Func("acme-http01-trusted-proxies", "Comma-separated CIDRs of the proxies in front of the ACME solver Service (the Ingress controllers' pods) whose X-Forwarded-For names the client.", func(v string) error {
		for _, cidr := range strings.Split(v, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(cidr))
			if err != nil {
				return err
			}
			opts.ACMEHTTP01TrustedProxies = append(opts.ACMEHTTP01TrustedProxies, p)
		}
		return nil
	})
	fs.BoolVar(&opts.RequireSecretsPolicy, "require-secrets-policy", true, "Refuse to run unless a ValidatingAdmissionPolicy keeps the controller from creating ServiceAccount token Secrets (the manifests install one).")
	zapOpts.BindFlags(fs)
	flag.Parse()

	opts.Logger = zap.New(zap.UseFlagOptions(&zapOpts))
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = float32(qps), burst
	cfg.UserAgent = "certmint-controller"
	opts.Config = cfg

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return controller.Run(ctx, opts)
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", kubeconfig)
}
