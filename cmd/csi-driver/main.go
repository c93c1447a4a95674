// Command csi-driver is the certmint CSI node driver: one per node, it
// gives pods certificates through inline CSI volumes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"k8s.io/klog/v2"

	"github.com/certmint/certmint/pkg/manager"
	"github.com/certmint/certmint/pkg/nodedriver"
	"github.com/certmint/certmint/pkg/renewal"
	"github.com/certmint/certmint/pkg/request"
)

func main() {
	var opts nodedriver.Options
	flag.StringVar(&opts.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI unix socket to serve on.")
	flag.StringVar(&opts.KubeletEndpoint, "kubelet-endpoint", "/var/lib/kubelet/plugins/"+request.DriverName+"/csi.sock",
		"Path of the CSI socket as the kubelet sees it, reported at registration.")
	flag.StringVar(&opts.NodeName, "node-name", os.Getenv("NODE_NAME"), "Name of this node (default $NODE_NAME).")
	flag.StringVar(&opts.Kubeconfig, "kubeconfig", "", "Kubeconfig file; empty uses the pod's in-cluster credentials.")
	flag.StringVar(&opts.StateDir, "state-dir", "/var/lib/kubelet/plugins/csi.certmint.io/state", "Directory for volume state that survives restarts.")
	flag.StringVar(&opts.DataRoot, "data-root", "/var/lib/kubelet/plugins/"+request.DriverName+"/volumes",
		"Directory of the per-volume tmpfs mounts; must be under the kubelet's root with Bidirectional mount propagation.")
	flag.StringVar(&opts.PluginRegistrationDir, "plugin-registration-dir", "/var/lib/kubelet/plugins_registry",
		"The kubelet's plugin registration directory; empty disables registration.")
	flag.StringVar(&opts.HealthAddr, "health-addr", ":9808", "Address of the /healthz endpoint; empty disables it.")
	flag.StringVar(&opts.MetricsAddr, "metrics-addr", ":9809", "Address of the /metrics and /volumes endpoints; empty disables them.")
	var qps float64
	flag.Float64Var(&qps, "kube-api-qps", nodedriver.DefaultKubeAPIQPS, "Requests per second the driver may make to the API server.")
	flag.IntVar(&opts.KubeAPIBurst, "kube-api-burst", nodedriver.DefaultKubeAPIBurst, "Burst of requests above --kube-api-qps.")
	flag.Float64Var(&opts.RenewalQPS, "renewal-qps", renewal.DefaultQPS, "Certificate renewals the driver may start per second.")
	flag.IntVar(&opts.RenewalBurst, "renewal-burst", renewal.DefaultBurst, "Burst of renewals above --renewal-qps.")
	flag.DurationVar(&opts.ReissueSpread, "reissue-spread", renewal.DefaultReissueSpread,
		"Window over which certificates an issuer asks back (status.reissueBefore) are re-issued, at random; 0 re-issues them at once.")
	flag.DurationVar(&opts.GCInterval, "gc-interval", manager.DefaultGCInterval, "How often to look for volumes whose pods are gone.")
	klog.InitFlags(flag.CommandLine)
	flag.Parse()

	opts.KubeAPIQPS = float32(qps)
	opts.Version = "devel"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		opts.Version = bi.Main.Version
	}
	opts.Logger = klog.NewKlogr()

	if err := run(opts); err != nil {
		fmt.Fprintln(os.Stderr, "csi-driver:", err)
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}

// run runs the driver until SIGINT or SIGTERM.
func run(opts nodedriver.Options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return nodedriver.Run(ctx, opts)
}
