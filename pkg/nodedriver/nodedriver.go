// Package nodedriver wires the certmint node driver together: API clients,
// CSR watch, issuer trust bundle cache, pod addresses, storage, issuance
// manager, certificate renewal, CSI server, kubelet registration, health,
// metrics and volume status endpoints. It is the one place that knows them
// all.
package nodedriver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/certmint/certmint/pkg/csi"
	"github.com/certmint/certmint/pkg/csr"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/manager"
	"github.com/certmint/certmint/pkg/podips"
	"github.com/certmint/certmint/pkg/registration"
	"github.com/certmint/certmint/pkg/renewal"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
	"github.com/certmint/certmint/pkg/trust"
	"github.com/certmint/certmint/pkg/volumestatus"
)

// Options configure the node driver. The zero value of an optional field
// turns its feature off.
type Options struct {
	// Endpoint is the CSI unix socket ("unix:///path" or "/path"). Required.
	Endpoint string
	// KubeletEndpoint is the CSI socket's path as the kubelet sees it, when
	// the driver runs in a container with another view; defaults to
	// Endpoint's path.
	KubeletEndpoint string
	// NodeName is this node's name. Required.
	NodeName string
	// Kubeconfig is a kubeconfig file; empty means in-cluster credentials
	// (the pod's own ServiceAccount token, bound to the pod).
	Kubeconfig string
	// StateDir holds volume state that survives restarts. Required.
	StateDir string
	// DataRoot holds the per-volume tmpfs directories. Required.
	DataRoot string
	// PluginRegistrationDir is the kubelet's plugins_registry directory;
	// empty disables registration.
	PluginRegistrationDir string
	// HealthAddr serves /healthz; empty disables it.
	HealthAddr string
	// MetricsAddr serves /metrics and /volumes; empty disables them. It
	// may equal HealthAddr.
	MetricsAddr string
	// KubeAPIQPS and KubeAPIBurst limit the driver's API requests; zero
	// means DefaultKubeAPIQPS and DefaultKubeAPIBurst.
	KubeAPIQPS   float32
	KubeAPIBurst int
	// RenewalQPS and RenewalBurst limit how many certificate renewals start
	// per second on this node; zero means renewal.DefaultQPS and
	// renewal.DefaultBurst.
	RenewalQPS   float64
	RenewalBurst int
	// ReissueSpread is the window over which certificates an issuer asks
	// back (its status.reissueBefore) are re-issued, uniformly at random;
	// zero means at once.
	ReissueSpread time.Duration
	// GCInterval is how often volumes whose pods are gone are looked for;
	// zero means manager.DefaultGCInterval.
	GCInterval time.Duration
	// Version is reported to the kubelet.
	Version string
	// Logger; zero discards.
	Logger logr.Logger
}

// Each publish makes two API requests (create and delete a CSR). client-go's
// default of 5 per second would make a node starting 20 pods wait seconds.
// At 50 per second even one publish at a time was throttled once the burst
// was spent (p50 38 ms against 28 ms, 26 against 69 issuances per second at
// 32 in flight; docs/benchmarks.md).
const (
	DefaultKubeAPIQPS   = 100
	DefaultKubeAPIBurst = 250
)

// shutdownTimeout bounds how long calls in progress may finish on exit.
const shutdownTimeout = 30 * time.Second

// Run runs the node driver until ctx ends.
func Run(ctx context.Context, opts Options) error {
	switch {
	case opts.Endpoint == "":
		return errors.New("an endpoint is required")
	case opts.NodeName == "":
		return errors.New("a node name is required")
	case opts.StateDir == "" || opts.DataRoot == "":
		return errors.New("a state directory and a data root are required")
	case opts.KubeAPIQPS < 0 || opts.KubeAPIBurst < 0:
		return errors.New("the API request rate and burst must not be negative")
	}
	log := opts.Logger

	cfg, err := clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
	if err != nil {
		return fmt.Errorf("loading API server credentials: %w", err)
	}
	cfg.UserAgent = "certmint-csi-driver/" + opts.Version
	// Protobuf costs the API server and the node less CPU than JSON, and
	// every publish waits on these calls.
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cfg.QPS, cfg.Burst = opts.KubeAPIQPS, opts.KubeAPIBurst
	if cfg.QPS == 0 {
		cfg.QPS = DefaultKubeAPIQPS
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultKubeAPIBurst
	}
	// Not a clientset, whose code for every API group would be most of the
	// binary and of its resident set: a client for each resource the driver
	// uses. They share one connection pool, as a clientset's clients do.
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return err
	}
	// Issuers are custom resources: the dynamic client speaks JSON to them
	// whatever the content type above. It has a rate limit of its own.
	dyn, err := dynamic.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return err
	}
	// Requests and Events share one rate limit, as a clientset's clients
	// do.
	typedCfg := rest.CopyConfig(cfg)
	typedCfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	csrs, err := csr.NewAPI(typedCfg, httpClient)
	if err != nil {
		return err
	}
	events, eventScheme, err := newEventSink(typedCfg, httpClient)
	if err != nil {
		return err
	}
	pods, err := podips.NewAPI(typedCfg, httpClient)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	requester, err := csr.New(csr.Options{Client: csrs, NodeName: opts.NodeName, Logger: log.WithName("csr")})
	if err != nil {
		return err
	}
	store, err := storage.New(storage.Options{DataRoot: opts.DataRoot, StateDir: opts.StateDir, Mounter: storage.NewMounter()})
	if err != nil {
		return err
	}
	trust, err := trust.NewIssuerTrust(dyn)
	if err != nil {
		return err
	}
	renewals, err := renewal.New(renewal.Options{QPS: opts.RenewalQPS, Burst: opts.RenewalBurst, ReissueSpread: opts.ReissueSpread,
		Logger: log.WithName("renewal"), Metrics: renewal.NewMetrics(reg)})
	if err != nil {
		return err
	}
	// Events tell a pod's users what happens to its certificate when no
	// CSI call is there to carry an error: a renewal that fails.
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(events)
	recorder := broadcaster.NewRecorder(eventScheme, corev1.EventSource{Component: "certmint-csi-driver", Host: opts.NodeName})
	// The kubelet does not pass a pod's addresses; this watches the node's
	// pods for them, only while a volume asks for them.
	podIPs, err := podips.New(podips.Options{Client: pods, NodeName: opts.NodeName, Logger: log.WithName("podips")})
	if err != nil {
		return err
	}
	mgr, err := manager.New(manager.Options{Storage: store, Requester: requester, Trust: trust, Reissue: trust, PodIPs: podIPs, Events: recorder,
		GCInterval: opts.GCInterval, Logger: log.WithName("manager"), Metrics: manager.NewMetrics(reg), Renewals: renewals})
	if err != nil {
		return err
	}
	if err := trust.OnChange(mgr.IssuerChanged); err != nil {
		return err
	}
	podIPs.OnChange(mgr.PodChanged)
	volumes, err := volumestatus.New(volumestatus.Options{Volumes: mgr, Renewals: renewals, NodeName: opts.NodeName})
	if err != nil {
		return err
	}
	reg.MustRegister(volumes)
	// No request of this run exists yet: any of the node's requests were
	// left by an earlier run that stopped while waiting for them. Failing
	// to delete them leaves only clutter.
	if err := requester.DeleteLeftovers(ctx); err != nil {
		log.Error(err, "Deleting CertificateSigningRequests an earlier run left behind")
	}
	// Before serving, so that no CSI call races a volume being resumed.
	if err := mgr.Resume(ctx); err != nil {
		return fmt.Errorf("resuming published volumes: %w", err)
	}
	ready := func() bool { return requester.HasSynced() && trust.HasSynced() }
	driver, err := csi.NewDriver(csi.Options{NodeID: opts.NodeName, Publisher: mgr, Version: opts.Version, Ready: ready})
	if err != nil {
		return err
	}
	server, err := csi.Listen(opts.Endpoint, driver, log.WithName("csi"), reg)
	if err != nil {
		return fmt.Errorf("listening on the CSI endpoint: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	// fail stops what already runs before returning a setup error.
	fail := func(err error) error {
		cancel()
		_ = g.Wait()
		return err
	}
	g.Go(func() error { requester.Run(ctx); return nil })
	g.Go(func() error { trust.Run(ctx); return nil })
	g.Go(func() error { podIPs.Run(ctx); return nil })
	g.Go(func() error {
		// A renewal or a volume's refresh before the issuers are loaded
		// would find no trust bundle, and resumed volumes may be due at
		// once. Issuers' changes seen meanwhile stay queued.
		if !cache.WaitForCacheSync(ctx.Done(), requester.HasSynced, trust.HasSynced) {
			return nil
		}
		var wg sync.WaitGroup
		wg.Go(func() { mgr.Run(ctx) })
		renewals.Run(ctx, mgr)
		wg.Wait()
		return nil
	})
	g.Go(server.Serve)
	g.Go(func() error {
		<-ctx.Done()
		stopped := make(chan struct{})
		go func() { server.Stop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(shutdownTimeout):
		}
		return nil
	})
	log.Info("Serving CSI", logkeys.Endpoint, server.Path(), logkeys.Node, opts.NodeName)

	health := []func() error{func() error {
		if !requester.HasSynced() {
			return errors.New("the watch on CertificateSigningRequests is not established")
		}
		return nil
	}, func() error {
		if !trust.HasSynced() {
			return errors.New("the watches on Issuers and ClusterIssuers are not established")
		}
		return nil
	}}
	if opts.PluginRegistrationDir != "" {
		kubeletEndpoint := opts.KubeletEndpoint
		if kubeletEndpoint == "" {
			kubeletEndpoint = server.Path()
		}
		regServer, err := registration.Listen(registration.Options{DriverName: request.DriverName, CSIEndpoint: kubeletEndpoint,
			Dir: opts.PluginRegistrationDir, Logger: log.WithName("registration")})
		if err != nil {
			return fail(fmt.Errorf("listening for kubelet registration: %w", err))
		}
		g.Go(regServer.Serve)
		g.Go(func() error { <-ctx.Done(); regServer.Stop(); return nil })
		health = append(health, regServer.Healthy)
	}

	// Ready also says what the driver cannot do for volumes it serves, so
	// that a stranded volume shows as a pod not Ready long before its
	// certificate expires; liveness does not, as a restart mends none.
	readiness := append(slices.Clone(health), func() error {
		if problems := mgr.Problems(); len(problems) > 0 {
			return errors.New(strings.Join(problems, "\n"))
		}
		return nil
	})
	for addr, mux := range httpMuxes(opts, reg, volumes, health, readiness) {
		srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("listening on %s: %w", addr, err))
		}
		g.Go(func() error {
			if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			return srv.Shutdown(sctx)
		})
	}
	return g.Wait()
}

// httpMuxes returns one mux per listen address, so health and metrics can
// share a port or not. /healthz runs the health checks, /readyz the
// readiness checks. /volumes is served with /metrics, to whoever may
// scrape: it tells no more than the per-volume series do, the names and
// validity of certificates the pods present to their peers anyway.
func httpMuxes(opts Options, reg *prometheus.Registry, volumes http.Handler, health, ready []func() error) map[string]*http.ServeMux {
	muxes := map[string]*http.ServeMux{}
	mux := func(addr string) *http.ServeMux {
		if muxes[addr] == nil {
			muxes[addr] = http.NewServeMux()
		}
		return muxes[addr]
	}
	if opts.HealthAddr != "" {
		mux(opts.HealthAddr).HandleFunc("/healthz", checksHandler(health))
		mux(opts.HealthAddr).HandleFunc("/readyz", checksHandler(ready))
	}
	if opts.MetricsAddr != "" {
		mux(opts.MetricsAddr).Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
		mux(opts.MetricsAddr).Handle("GET /volumes", volumes)
	}
	return muxes
}

// checksHandler answers 200 when every check passes, else 503 with what
// failed, a line each.
func checksHandler(checks []func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		var problems []string
		for _, check := range checks {
			if err := check(); err != nil {
				problems = append(problems, err.Error())
			}
		}
		if len(problems) > 0 {
			http.Error(w, strings.Join(problems, "\n"), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}
}
