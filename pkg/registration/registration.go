// Package registration registers the CSI driver with the kubelet through
// the kubelet's plugin registration API, so the driver needs no
// node-driver-registrar sidecar. The kubelet watches its plugins_registry
// directory, connects to the socket placed there, asks for the plugin's
// name and CSI endpoint, and reports whether it accepted it.
package registration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/certmint/certmint/pkg/logkeys"
)

// supportedVersions are the CSI spec versions the driver speaks.
var supportedVersions = []string{"1.0.0"}

// Options configure a Server.
type Options struct {
	// DriverName is the CSI driver name. Required.
	DriverName string
	// CSIEndpoint is the path of the driver's CSI socket as the kubelet
	// sees it. Required.
	CSIEndpoint string
	// Dir is the kubelet's plugins_registry directory. Required.
	Dir string
	// Logger; zero discards.
	Logger logr.Logger
}

// Server answers the kubelet's registration calls.
type Server struct {
	registerapi.UnimplementedRegistrationServer

	opts     Options
	grpc     *grpc.Server
	listener net.Listener

	mu     sync.Mutex
	status *registerapi.RegistrationStatus
}

var _ registerapi.RegistrationServer = (*Server)(nil)

// Listen creates the registration socket <Dir>/<DriverName>-reg.sock.
func Listen(opts Options) (*Server, error) {
	switch {
	case opts.DriverName == "":
		return nil, errors.New("registration: DriverName is required")
	case opts.CSIEndpoint == "":
		return nil, errors.New("registration: CSIEndpoint is required")
	case opts.Dir == "":
		return nil, errors.New("registration: Dir is required")
	}
	path := SocketPath(opts.Dir, opts.DriverName)
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("removing stale registration socket: %w", err)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	s := &Server{opts: opts, grpc: grpc.NewServer(), listener: lis}
	registerapi.RegisterRegistrationServer(s.grpc, s)
	return s, nil
}

// SocketPath is where the registration socket of driverName lives in dir.
func SocketPath(dir, driverName string) string {
	return filepath.Join(dir, driverName+"-reg.sock")
}

// Serve serves until Stop.
func (s *Server) Serve() error {
	err := s.grpc.Serve(s.listener)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop stops serving and removes the socket, which tells the kubelet the
// plugin is gone.
func (s *Server) Stop() {
	s.grpc.Stop()
	_ = os.Remove(SocketPath(s.opts.Dir, s.opts.DriverName))
}

// GetInfo tells the kubelet which CSI driver registers, at which socket.
func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.opts.DriverName,
		Endpoint:          s.opts.CSIEndpoint,
		SupportedVersions: supportedVersions,
	}, nil
}

// NotifyRegistrationStatus records whether the kubelet took the driver, for
// the driver's health.
func (s *Server) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.mu.Lock()
	s.status = st
	s.mu.Unlock()
	if st.GetPluginRegistered() {
		s.opts.Logger.Info("Registered with the kubelet", logkeys.Endpoint, s.opts.CSIEndpoint)
	} else {
		s.opts.Logger.Error(errors.New(st.GetError()), "The kubelet rejected the registration")
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// Healthy reports an error if the kubelet rejected the registration. Not
// having heard from the kubelet yet is healthy: it registers plugins when it
// gets round to it.
func (s *Server) Healthy() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.status != nil && !s.status.GetPluginRegistered() {
		return fmt.Errorf("kubelet rejected the registration: %s", s.status.GetError())
	}
	return nil
}
