package main

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

// startTimeout bounds how long a binary may take to become ready.
const startTimeout = time.Minute

// driverProcess is the driver binary for bench-node and a CSI client on its
// socket.
type driverProcess struct {
	*process
	node      csispec.NodeClient
	conn      *grpc.ClientConn
	serverURL string // serves /healthz and /metrics
}

// startDriver runs the driver with its state and volumes under dir; a
// driver started again on the same dir takes over the volumes published
// before, as after a DaemonSet rollout.
func startDriver(ctx context.Context, binary, kubeconfig, dir, logPath string, extraArgs ...string) (*driverProcess, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	socket := filepath.Join(dir, "csi.sock")
	args := append([]string{
		"--endpoint=unix://" + socket,
		"--kubelet-endpoint=" + socket,
		"--node-name=" + nodeName,
		"--kubeconfig=" + kubeconfig,
		"--state-dir=" + filepath.Join(dir, "state"),
		"--data-root=" + filepath.Join(dir, "volumes"),
		// No kubelet here to register with: the harness calls the socket.
		"--plugin-registration-dir=",
		"--health-addr=" + addr,
		"--metrics-addr=" + addr,
	}, extraArgs...)
	p, err := startBinary("driver", binary, logPath, args...)
	if err != nil {
		return nil, err
	}
	d := &driverProcess{process: p, serverURL: "http://" + addr}
	// Healthy means its watches are established.
	if err := p.waitHTTP(ctx, d.serverURL+"/healthz", startTimeout); err != nil {
		p.stop()
		return nil, err
	}
	if d.conn, err = grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
		p.stop()
		return nil, err
	}
	d.node = csispec.NewNodeClient(d.conn)
	return d, nil
}

func (d *driverProcess) stop() {
	if d.conn != nil {
		d.conn.Close()
	}
	d.process.stop()
}

// metric returns the sum of the driver's samples whose line starts with
// prefix (a name and, optionally, some labels).
func (d *driverProcess) metric(prefix string) (float64, error) {
	return scrapeSum(d.serverURL+"/metrics", prefix)
}

// saveMetrics writes the driver's /metrics to path.
func (d *driverProcess) saveMetrics(path string) error {
	resp, err := http.Get(d.serverURL + "/metrics")
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

func scrapeSum(url, prefix string) (float64, error) {
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
