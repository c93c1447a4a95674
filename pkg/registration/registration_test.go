package registration

import (
	"context"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// The kubelet's side of registration, over the real socket.
func TestKubeletSeesTheDriverAndItsVerdictIsKept(t *testing.T) {
	dir := t.TempDir()
	s, err := Listen(Options{DriverName: "csi.certmint.io", CSIEndpoint: "/var/lib/kubelet/plugins/csi.certmint.io/csi.sock", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.Serve() }()
	defer s.Stop()

	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "csi.certmint.io-reg.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	kubelet := registerapi.NewRegistrationClient(conn)
	info, err := kubelet.GetInfo(context.Background(), &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != registerapi.CSIPlugin || info.Name != "csi.certmint.io" || info.Endpoint != "/var/lib/kubelet/plugins/csi.certmint.io/csi.sock" || len(info.SupportedVersions) == 0 {
		t.Fatalf("GetInfo = %+v", info)
	}
	if err := s.Healthy(); err != nil {
		t.Fatal("unhealthy before the kubelet answered:", err)
	}
	if _, err := kubelet.NotifyRegistrationStatus(context.Background(), &registerapi.RegistrationStatus{PluginRegistered: false, Error: "version mismatch"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Healthy(); err == nil {
		t.Fatal("healthy after the kubelet rejected the plugin")
	}
	if _, err := kubelet.NotifyRegistrationStatus(context.Background(), &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Healthy(); err != nil {
		t.Fatal(err)
	}
}
