package stack

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// StartTimeout bounds how long a binary may take to become ready.
const StartTimeout = time.Minute

// Driver is the driver binary for one node and a CSI client on its socket,
// which calls it as the kubelet would.
type Driver struct {
	*Process
	Node      csispec.NodeClient
	conn      *grpc.ClientConn
	ServerURL string // serves /healthz, /readyz and /metrics
	// Dir holds its state and volumes.
	Dir string
}

// StartDriver runs the driver for node with its state and volumes under
// dir; a driver started again on the same dir takes over the volumes
// published before, as after a DaemonSet rollout.
func StartDriver(ctx context.Context, binary, kubeconfig, node, dir, logPath string, extraArgs ...string) (*Driver, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	socket := filepath.Join(dir, "csi.sock")
	args := append([]string{
		"--endpoint=unix://" + socket,
		"--kubelet-endpoint=" + socket,
		"--node-name=" + node,
		"--kubeconfig=" + kubeconfig,
		"--state-dir=" + filepath.Join(dir, "state"),
		"--data-root=" + filepath.Join(dir, "volumes"),
		// No kubelet here to register with: the harness calls the socket.
		"--plugin-registration-dir=",
		"--health-addr=" + addr,
		"--metrics-addr=" + addr,
	}, extraArgs...)
	p, err := StartBinary("driver", binary, logPath, args...)
	if err != nil {
		return nil, err
	}
	d := &Driver{Process: p, ServerURL: "http://" + addr, Dir: dir}
	// Healthy means its watches are established.
	if err := p.WaitHTTP(ctx, d.ServerURL+"/healthz", StartTimeout); err != nil {
		p.Stop()
		return nil, err
	}
	if d.conn, err = grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		p.Stop()
		return nil, err
	}
	d.Node = csispec.NewNodeClient(d.conn)
	return d, nil
}

// Stop stops the driver and closes the client.
func (d *Driver) Stop() {
	if d.conn != nil {
		d.conn.Close()
	}
	d.Process.Stop()
}

// Metric returns the sum of the driver's samples whose line starts with
// prefix (a name and, optionally, some labels).
func (d *Driver) Metric(prefix string) (float64, error) {
	return ScrapeSum(d.ServerURL+"/metrics", prefix)
}

// SaveMetrics writes the driver's /metrics to path.
func (d *Driver) SaveMetrics(path string) error {
	resp, err := http.Get(d.ServerURL + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, body, 0o644)
}

// ScrapeSum returns the sum of the samples at url whose line starts with
// prefix.
func ScrapeSum(url, prefix string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %q: %w", line, err)
		}
		sum += v
	}
	return sum, nil
}
