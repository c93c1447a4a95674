package driver_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	csispec "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/certmint/certmint/pkg/csr/csrtest"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/test/e2e/cluster"
)

// driverProcess is the csi-driver binary run as a process on a node of its
// own, the way the DaemonSet runs it, and called over its CSI socket the way
// the kubelet calls it.
type driverProcess struct {
	bin, kubeconfig, node, dir string
	socket, healthAddr         string
	logPath                    string

	cmd    *exec.Cmd
	client csispec.NodeClient
	conn   *grpc.ClientConn
}

// buildDriver builds ./cmd/csi-driver.
func buildDriver(t *testing.T) string {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "csi-driver")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/csi-driver")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the driver: %v\n%s", err, out)
	}
	return bin
}

func newDriverProcess(t *testing.T, node string) *driverProcess {
	t.Helper()
	kubeconfig, err := env.kubeconfigFor(context.Background(), node)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := freeAddr()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	d := &driverProcess{bin: buildDriver(t), kubeconfig: kubeconfig, node: node, dir: dir,
		socket: filepath.Join(dir, "csi.sock"), healthAddr: addr, logPath: filepath.Join(dir, "driver.log")}
	t.Cleanup(func() {
		d.kill(t)
		if t.Failed() {
			t.Logf("driver log (%s):\n%s", d.logPath, cluster.LogTail(d.logPath, 80))
		}
	})
	return d
}

// start runs the driver and waits until it is healthy.
func (d *driverProcess) start(t *testing.T) {
	t.Helper()
	log, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	d.cmd = exec.Command(d.bin,
		"--endpoint=unix://"+d.socket, "--node-name="+d.node, "--kubeconfig="+d.kubeconfig,
		"--state-dir="+filepath.Join(d.dir, "state"), "--data-root="+d.volumes(),
		"--plugin-registration-dir=", "--health-addr="+d.healthAddr, "--metrics-addr=",
		"--reissue-spread=0", "--gc-interval=1s", "-v=2")
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		resp, err := http.Get("http://" + d.healthAddr + "/healthz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		t.Fatalf("the driver did not become healthy: %v", err)
	}
	d.conn, err = grpc.NewClient("unix://"+d.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	d.client = csispec.NewNodeClient(d.conn)
}

// kill stops the driver with SIGKILL: no clean-up of its own runs.
func (d *driverProcess) kill(t *testing.T) {
	t.Helper()
	if d.cmd == nil {
		return
	}
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Error(err)
	}
	_ = d.cmd.Wait()
	d.cmd = nil
	_ = d.conn.Close()
}

func (d *driverProcess) volumes() string { return filepath.Join(d.dir, "volumes") }

// checkVolume checks that the volume is mounted at its target and holds a
// key pair that verifies against its CA file. It checks the chain as of the
// certificate's own start, not now: the short-lived certificates of these
// tests may expire while a busy machine restarts the driver, which says
// nothing about whether its files survived. Callers that need a certificate
// valid now check that too.
func checkVolume(t *testing.T, r *csispec.NodePublishVolumeRequest) *x509.Certificate {
	t.Helper()
	if _, _, mounted := mountOf(t, r.TargetPath); !mounted {
		t.Errorf("%s is not mounted", r.TargetPath)
		return nil
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(r.TargetPath, "tls.crt"), filepath.Join(r.TargetPath, "tls.key"))
	if err != nil {
		t.Errorf("%s: %v", r.TargetPath, err)
		return nil
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := checkTrustBundle(t, r.TargetPath)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: leaf.NotBefore.Add(time.Second)}); err != nil {
		t.Errorf("%s: %v", r.TargetPath, err)
	}
	return leaf
}

// orphan tears a pod down the way a kubelet does without calling
// NodeUnpublishVolume: it unmounts the target and removes the pod's
// directory.
func orphan(t *testing.T, r *csispec.NodePublishVolumeRequest) {
	t.Helper()
	if err := syscall.Unmount(r.TargetPath, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Dir(filepath.Dir(filepath.Dir(r.TargetPath)))); err != nil {
		t.Fatal(err)
	}
}

func waitGone(t *testing.T, path string, timeout time.Duration) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		_, err := os.Stat(path)
		return os.IsNotExist(err), nil
	})
	if err != nil {
		t.Errorf("%s is still there after %v", path, timeout)
	}
}

// TestTheDriverBinaryKilledMidIssuanceResumesEveryVolume kills the driver
// with SIGKILL while a NodePublishVolume and a renewal wait for their
// certificates, and restarts it. Neither is finished by the new process:
// the kubelet saw the publish fail and calls NodePublishVolume again, which
// issues from the start, and the renewal, whose volume kept its old files
// and state, is due and runs again. The restarted driver removes what they
// left: the cut publish's tmpfs and both requests.
func TestTheDriverBinaryKilledMidIssuanceResumesEveryVolume(t *testing.T) {
	requireEnv(t)
	ctx := context.Background()
	const node = "node-2"
	d := newDriverProcess(t, node)
	d.start(t)

	// Certificates signed for 40 s (and backdated 30 s), so that each is
	// renewed about 17 s after it was issued.
	const lifetime = 40 * time.Second
	short := func(*certificatesv1.CertificateSigningRequest) csrtest.Decision {
		return csrtest.Decision{Lifetime: lifetime}
	}
	// The renewal of restart-3 is held by the signer when the driver dies.
	renewalHeld, release := make(chan string, 1), make(chan struct{})
	var requests atomic.Int32
	holdRenewal := func(r *certificatesv1.CertificateSigningRequest) csrtest.Decision {
		if requests.Add(1) == 2 {
			renewalHeld <- r.Name
			<-release
		}
		return csrtest.Decision{Lifetime: lifetime}
	}
	var vols []*csispec.NodePublishVolumeRequest
	for i := range 4 {
		name := fmt.Sprintf("restart-%d", i)
		decide := short
		if i == 3 {
			decide = holdRenewal
		}
		env.decideFor(t, name, decide)
		vols = append(vols, publishWith(t, d.client, node, name))
	}
	// Through the driver as it runs at the end: the client publishWith
	// unpublishes with is the first process's.
	t.Cleanup(func() {
		for _, r := range vols {
			_, _ = d.client.NodeUnpublishVolume(context.Background(), &csispec.NodeUnpublishVolumeRequest{VolumeId: r.VolumeId, TargetPath: r.TargetPath})
		}
	})
	var heldRenewal string
	select {
	case heldRenewal = <-renewalHeld:
	case <-time.After(2 * time.Minute):
		t.Fatal("waited two minutes for restart-3's renewal to reach the signer; it never did")
	}

	// A publish in flight: its request waits behind the held one.
	const slowPod = "restart-slow"
	env.decideFor(t, slowPod, short)
	slow := publishRequest(t, workloadPodOn(t, node, slowPod), "csi-it-"+slowPod)
	if err := os.MkdirAll(filepath.Dir(slow.TargetPath), 0o750); err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		_, err := d.client.NodePublishVolume(ctx, slow)
		published <- err
	}()
	var heldPublish string
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := env.admin.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		for _, r := range list.Items {
			if r.Annotations[request.AnnotationPodName] == slowPod {
				heldPublish = r.Name
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the publish in flight never made its request: %v", err)
	}
	d.kill(t)
	// The signer answers both requests now; nobody waits for them.
	close(release)
	if err := <-published; err == nil {
		t.Fatal("a publish whose driver was killed succeeded")
	}

	// While the driver is down, the kubelet tears one pod down.
	orphan(t, vols[0])
	renewedBefore := map[string]string{}
	for _, r := range vols[1:] {
		renewedBefore[r.TargetPath] = readLeaf(t, r.TargetPath).SerialNumber.String()
	}

	restarted := time.Now()
	d.start(t)
	t.Logf("restarted and healthy in %v", time.Since(restarted).Round(time.Millisecond))

	// The pod gone while the driver was down: its volume is removed.
	waitGone(t, filepath.Join(d.volumes(), vols[0].VolumeId), time.Minute)
	waitGone(t, filepath.Join(d.dir, "state", vols[0].VolumeId+".json"), time.Minute)
	// The publish cut short: its tmpfs is gone before the kubelet retries,
	// and so is its request.
	if _, err := os.Stat(filepath.Join(d.volumes(), slow.VolumeId)); !os.IsNotExist(err) {
		t.Errorf("the cut publish's volume directory: %v, want it removed at start", err)
	}
	// The requests of the cut publish and renewal are deleted.
	for _, name := range []string{heldPublish, heldRenewal} {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			_, err := env.admin.CertificatesV1().CertificateSigningRequests().Get(ctx, name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err != nil {
			t.Errorf("waited a minute for the CertificateSigningRequest %s of an issuance cut short to be deleted; it is still there", name)
		}
	}
	// Every other volume is still mounted with valid files.
	for _, r := range vols[1:] {
		checkVolume(t, r)
	}

	// The kubelet's retry of the cut publish completes.
	if _, err := d.client.NodePublishVolume(ctx, slow); err != nil {
		t.Fatalf("the kubelet's retry of the cut publish: %v", err)
	}
	t.Cleanup(func() {
		_, _ = d.client.NodeUnpublishVolume(context.Background(), &csispec.NodeUnpublishVolumeRequest{VolumeId: slow.VolumeId, TargetPath: slow.TargetPath})
	})
	checkVolume(t, slow)

	// Renewals resume: every volume gets a new certificate, under its mount.
	for _, r := range vols[1:] {
		err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
			return readLeaf(t, r.TargetPath).SerialNumber.String() != renewedBefore[r.TargetPath], nil
		})
		if err != nil {
			t.Errorf("waited two minutes for %s to be renewed after the restart; it was not", r.TargetPath)
			continue
		}
		if leaf := checkVolume(t, r); leaf != nil && !time.Now().Before(leaf.NotAfter) {
			t.Errorf("%s: the renewed certificate expired at %s", r.TargetPath, leaf.NotAfter)
		}
	}
	t.Logf("every volume renewed %v after the restart", time.Since(restarted).Round(time.Millisecond))

	// A pod torn down while the driver runs: collected within --gc-interval.
	orphan(t, vols[1])
	waitGone(t, filepath.Join(d.volumes(), vols[1].VolumeId), time.Minute)
}
