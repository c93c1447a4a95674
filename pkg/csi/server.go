package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/logkeys"
)

// Server serves a Driver on a unix socket.
type Server struct {
	grpc     *grpc.Server
	listener net.Listener
	path     string
}

// Listen creates the unix socket at endpoint ("unix:///path" or "/path"),
// replacing a stale socket left by an earlier run, and registers d on it.
// reg may be nil.
func Listen(endpoint string, d *Driver, log logr.Logger, reg prometheus.Registerer) (*Server, error) {
	path, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("removing stale socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(newInterceptor(log, reg)))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	return &Server{grpc: srv, listener: lis, path: path}, nil
}

// socketPath accepts the endpoint forms CSI tooling uses.
func socketPath(endpoint string) (string, error) {
	path := strings.TrimPrefix(endpoint, "unix://")
	if path == "" || !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("endpoint %q must be an absolute unix socket path, optionally prefixed with unix://", endpoint)
	}
	return path, nil
}

// Path is the socket's path.
func (s *Server) Path() string { return s.path }

// Serve serves until Stop.
func (s *Server) Serve() error {
	err := s.grpc.Serve(s.listener)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop lets calls in progress finish, then stops.
func (s *Server) Stop() {
	s.grpc.GracefulStop()
}

// newInterceptor logs every call and counts it. Volume contexts are logged
// redacted: the kubelet may put the pod's ServiceAccount tokens there, and
// keystore passwords are attributes too.
func newInterceptor(log logr.Logger, reg prometheus.Registerer) grpc.UnaryServerInterceptor {
	calls := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "certmint",
		Subsystem: "driver",
		Name:      "csi_call_duration_seconds",
		Help:      "Duration of CSI calls by method and gRPC status code.",
		Buckets:   []float64{.001, .005, .01, .02, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
	}, []string{"method", "code"})
	if reg != nil {
		reg.MustRegister(calls)
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		l := log.WithValues(logkeys.Method, info.FullMethod)
		switch r := req.(type) {
		case *csi.NodePublishVolumeRequest:
			l = l.WithValues(logkeys.VolumeID, r.GetVolumeId(), logkeys.TargetPath, r.GetTargetPath())
			l.V(4).Info("Request", logkeys.Attributes, attributes.Redacted(r.GetVolumeContext()))
		case *csi.NodeUnpublishVolumeRequest:
			l = l.WithValues(logkeys.VolumeID, r.GetVolumeId(), logkeys.TargetPath, r.GetTargetPath())
		}
		resp, err := handler(ctx, req)
		elapsed := time.Since(start)
		code := status.Code(err)
		calls.WithLabelValues(info.FullMethod, code.String()).Observe(elapsed.Seconds())
		if err != nil {
			l.Error(err, "CSI call failed", logkeys.Code, code.String(), logkeys.Duration, elapsed.String())
		} else {
			l.V(2).Info("CSI call", logkeys.Duration, elapsed.String())
		}
		return resp, err
	}
}
