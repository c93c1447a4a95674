// Command bench measures certmint against real components and prints one
// markdown table: `make bench` runs it.
//
// The publish, memory, API and renewal figures come from a control plane
// (etcd and kube-apiserver) with the real controller binary signing for a
// CA ClusterIssuer and the real driver binary, which the harness calls over
// its CSI socket as the kubelet does: NodePublishVolume for an inline
// volume of a pod that exists in the API server and is bound to the
// driver's node. On the same control plane the controller then issues
// Certificates into kubernetes.io/tls Secrets, timed from the create call
// to the moment a watch on the Secrets sees one hold a certificate for its
// key. Last, the driver publishes as many volumes from a Vault
// ClusterIssuer (a Vault dev server on loopback). Pod start-up is measured
// on the full two-node cluster of test/e2e/cluster, with certmint installed
// from deploy/. Key generation is a Go benchmark of pkg/keystore.
//
//	go run ./test/bench                    # everything, about 6 minutes on 2 cores
//	go run ./test/bench -pods 0            # without the full cluster
//	go run ./test/bench -n 100 -storm=false -keys=false
//	go run ./test/bench -n 0 -pods 0 -keys=false   # only the Certificates
//
// Every phase warms up before it measures and is bounded in time; the whole
// run is bounded by -timeout. The harness needs root (tmpfs and bind mounts,
// and the full cluster).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/certmint/certmint/test/stack"

	"github.com/go-logr/logr"
	crlog "sigs.k8s.io/controller-runtime/pkg/log"
)

func main() {
	var opts options
	flag.IntVar(&opts.volumes, "n", 500, "Volumes published at each concurrency (1 and -concurrency); 0 skips the control-plane runs.")
	flag.IntVar(&opts.concurrency, "concurrency", 32, "Publishes in flight in the concurrent run.")
	flag.IntVar(&opts.warmup, "warmup", 30, "Publishes before measuring, not counted.")
	flag.BoolVar(&opts.storm, "storm", true, "Make every published volume due for renewal at once and measure the renewals.")
	flag.DurationVar(&opts.dueAfter, "storm-due-after", 2*time.Minute,
		"How long after issuance the storm's certificates are due for renewal; must exceed the time the publish runs take.")
	flag.Var(&opts.driverFlags, "driver-flag", "A flag for the driver binary, such as --kube-api-qps=1000; repeat for more. The table is for the driver's defaults without it.")
	flag.BoolVar(&opts.profile, "profile", false, "Save a CPU profile of kube-apiserver during the concurrent run in the log directory, and build the driver and controller with symbols for perf (their memory then differs from the images').")
	flag.IntVar(&opts.certificates, "certificates", 200, "Certificates issued into Secrets at each concurrency (1 and -certificates-inflight); 0 skips them.")
	flag.IntVar(&opts.certificatesInflight, "certificates-inflight", 16, "Certificates in flight in the concurrent Certificate run.")
	flag.BoolVar(&opts.vault, "vault", true, "Publish -n volumes at each concurrency from a Vault ClusterIssuer too (a Vault dev server built by hack/vault.sh), and count its logins.")
	flag.IntVar(&opts.pods, "pods", 30, "Pods of each kind in the start-up comparison on the full cluster; 0 skips it.")
	flag.BoolVar(&opts.keys, "keys", true, "Benchmark key generation per algorithm.")
	flag.StringVar(&opts.output, "o", "", "Also write the table to this file.")
	flag.StringVar(&opts.logDir, "logs", filepath.Join("_output", "bench", "logs"), "Directory, emptied first, for every component's log; relative to the repository.")
	flag.DurationVar(&opts.timeout, "timeout", 20*time.Minute, "Bound on the whole run.")
	flag.Parse()

	// The harness uses controller-runtime's client only to apply manifests.
	crlog.SetLogger(logr.Discard())
	if err := runUntilSignalled(opts); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// runUntilSignalled runs the harness, bounded by -timeout, SIGINT and
// SIGTERM.
func runUntilSignalled(opts options) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	return run(ctx, opts)
}

type options struct {
	volumes, concurrency, warmup int
	storm                        bool
	dueAfter                     time.Duration
	certificates                 int
	certificatesInflight         int
	vault                        bool
	pods                         int
	keys                         bool
	output, logDir               string
	driverFlags                  stringList
	profile                      bool
	timeout                      time.Duration
}

func run(ctx context.Context, opts options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: the driver mounts tmpfs and bind mounts, and the full cluster needs root too")
	}
	if opts.volumes != 0 && opts.volumes < 100 || opts.concurrency < 2 {
		return errors.New("-n must be 0 or at least 100 (memory is sampled at 100 volumes), -concurrency at least 2")
	}
	if opts.certificates != 0 && opts.certificates < 100 || opts.certificatesInflight < 2 {
		return errors.New("-certificates must be 0 or at least 100 (for a p99), -certificates-inflight at least 2")
	}
	root, err := stack.RepoRoot()
	if err != nil {
		return err
	}
	if err := os.Chdir(root); err != nil {
		return err
	}
	if err := os.RemoveAll(opts.logDir); err != nil {
		return err
	}
	if err := os.MkdirAll(opts.logDir, 0o755); err != nil {
		return err
	}
	res := results{machine: describeMachine(ctx), driverFlags: opts.driverFlags}

	if opts.volumes > 0 || opts.certificates > 0 {
		if err := runControlPlane(ctx, opts, &res); err != nil {
			return err
		}
	}
	if opts.keys && (opts.volumes == 0 || !opts.storm) {
		logf("benchmarking key generation")
		res.keys = benchmarkKeys()
	}
	if opts.pods > 0 {
		if err := runPodStartup(ctx, opts.pods, filepath.Join(opts.logDir, "cluster"), &res); err != nil {
			return err
		}
	}

	table := res.markdown()
	fmt.Print(table)
	if opts.output != "" {
		if err := os.MkdirAll(filepath.Dir(opts.output), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(opts.output, []byte(table), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// logf reports progress on stderr; the table goes to stdout.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
}

// stringList is a flag that may be repeated.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, " ") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
