package e2e

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/certmint/certmint/internal/kubectlcertmint"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
	"github.com/certmint/certmint/test/e2e/internal/repo"
)

// reissueTimeout bounds the wait for a volume's re-issue after its issuer
// asks: the driver's --reissue-spread (30 s in deploy/), the issuance, and
// a busy machine.
const reissueTimeout = 3 * time.Minute

// TestKubectlPlugin runs kubectl certmint the way a user does, as a binary
// named kubectl-certmint on the PATH that kubectl finds, against certmint
// on the real cluster: status finds all well in the namespace; inspect,
// as a user bound to nothing but the plugin's view and inspect roles,
// shows the serial and validity of the certificate mounted in a pod,
// read from the driver on the pod's node through the API server's pod
// proxy; renew pod refuses without --whole-issuer and with it has the
// pod's certificate re-issued in place, which inspect then shows.
func TestKubectlPlugin(t *testing.T) {
	f := framework.New(t, testCluster)
	installCertmint(t, f)
	root, err := deploy.CAClusterIssuer(t.Context(), testCluster.Config, caIssuer)
	if err != nil {
		t.Fatal(err)
	}
	pluginDir := buildPlugin(t)
	// The last node: inspect must find the driver on the pod's node, not
	// the first one listed.
	node := testCluster.Nodes[len(testCluster.Nodes)-1].Name
	const podName = "plugin"
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), certPod(podName, node, "default", []string{"sleep"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitForPodRunning(podName, podTimeout)
	leaf := mountedLeaf(t, f, podName)
	admin := pluginCommand{dir: pluginDir, kubeconfig: testCluster.Kubeconfig}

	t.Run("status finds the issuer Ready and nothing amiss in the namespace", func(t *testing.T) {
		code, out, errOut := admin.run(t, "status", "-n", f.Namespace, "-o", "json")
		var report kubectlcertmint.StatusReport
		if err := json.Unmarshal([]byte(out), &report); err != nil {
			t.Fatalf("%v in %q (stderr %q)", err, out, errOut)
		}
		var found bool
		for _, i := range report.Issuers {
			if i.Issuer.Kind == "ClusterIssuer" && i.Issuer.Name == caIssuer {
				found = i.Ready == "True" && i.CANotAfter != nil && i.CANotAfter.Equal(root.NotAfter)
			}
		}
		if code != kubectlcertmint.ExitOK || !report.Healthy || !found || len(report.Requests) != 0 {
			t.Errorf("exit %d, stderr %q, report %s; want 0, healthy, ClusterIssuer %s Ready with its root's expiry %v", code, errOut, out, caIssuer, root.NotAfter)
		}
		code, table, _ := admin.run(t, "status", "-n", f.Namespace)
		if code != kubectlcertmint.ExitOK {
			t.Errorf("status as a table: exit %d", code)
		}
		t.Logf("kubectl certmint status:\n%s", table)
	})

	viewer := pluginCommand{dir: pluginDir, kubeconfig: pluginUserKubeconfig(t, f, "viewer")}

	t.Run("inspect shows the serial and validity of the mounted certificate", func(t *testing.T) {
		v := inspectVolume(t, viewer, f.Namespace, podName)
		if c := v.Certificate; c == nil || c.SerialNumber != fmt.Sprintf("%x", leaf.SerialNumber) || !c.NotAfter.Equal(leaf.NotAfter) ||
			len(c.URIs) != 1 || c.URIs[0] != leaf.URIs[0].String() || v.Problem != "" || v.NextRenewalAttempt == nil {
			t.Errorf("inspect shows %+v (certificate %+v); want tls.crt's serial %x, until %v, for %s, and its next renewal",
				v, v.Certificate, leaf.SerialNumber, leaf.NotAfter, leaf.URIs[0])
		}
		code, table, errOut := viewer.run(t, "inspect", "pod", podName, "-n", f.Namespace)
		if code != kubectlcertmint.ExitOK || !strings.Contains(table, fmt.Sprintf("%x", leaf.SerialNumber)) || !strings.Contains(table, "on node "+node) {
			t.Errorf("exit %d, stderr %q, table\n%s\nwant the serial and node %s", code, errOut, table, node)
		}
		t.Logf("kubectl certmint inspect pod %s:\n%s", podName, table)
	})

	t.Run("renew pod re-issues the pod's certificate in place, with consent to renew its whole issuer", func(t *testing.T) {
		code, _, errOut := admin.run(t, "renew", "pod", podName, "-n", f.Namespace)
		if code != kubectlcertmint.ExitError || !strings.Contains(errOut, "--whole-issuer") {
			t.Fatalf("renew pod without --whole-issuer: exit %d, stderr %q; want refused", code, errOut)
		}
		code, out, errOut := admin.run(t, "renew", "pod", podName, "-n", f.Namespace, "--whole-issuer")
		if code != kubectlcertmint.ExitOK || !strings.Contains(out, "ClusterIssuer "+caIssuer) {
			t.Fatalf("renew pod --whole-issuer: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		t.Logf("kubectl certmint renew pod %s --whole-issuer:\n%s", podName, out)
		var renewed *x509.Certificate
		f.WaitFor("the pod's tls.crt to hold a re-issued certificate", reissueTimeout, func(ctx context.Context) (bool, string, error) {
			c, err := readMountedLeaf(f, podName)
			if err != nil {
				return false, err.Error(), nil
			}
			renewed = c
			return c.SerialNumber.Cmp(leaf.SerialNumber) != 0, fmt.Sprintf("serial %x", c.SerialNumber), nil
		})
		f.WaitFor("inspect to show the re-issued certificate", time.Minute, func(ctx context.Context) (bool, string, error) {
			v := inspectVolume(t, viewer, f.Namespace, podName)
			if v.Certificate == nil {
				return false, "no certificate", nil
			}
			return v.Certificate.SerialNumber == fmt.Sprintf("%x", renewed.SerialNumber), "serial " + v.Certificate.SerialNumber, nil
		})
		_, table, _ := viewer.run(t, "inspect", "pod", podName, "-n", f.Namespace)
		t.Logf("kubectl certmint inspect pod %s, after the re-issue:\n%s", podName, table)
	})
}

// pluginCommand runs `kubectl certmint` with the plugin in dir on the PATH.
type pluginCommand struct{ dir, kubeconfig string }

func (p pluginCommand) run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// kubectl hands a plugin the arguments after its name, and finds none
	// when a flag comes first: the kubeconfig goes by the environment.
	cmd := exec.CommandContext(ctx, filepath.Join(testCluster.BinDir, "kubectl"), append([]string{"certmint"}, args...)...)
	cmd.Env = append(os.Environ(), "PATH="+p.dir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+p.kubeconfig)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("kubectl certmint %s: %v", strings.Join(args, " "), err)
	}
	return code, out.String(), errOut.String()
}

// buildPlugin builds cmd/kubectl-certmint as kubectl-certmint into a
// directory of its own and returns the directory.
func buildPlugin(t *testing.T) string {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	build := exec.CommandContext(t.Context(), "go", "build", "-o", filepath.Join(dir, "kubectl-certmint"), "./cmd/kubectl-certmint")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl-certmint: %v\n%s", err, out)
	}
	return dir
}

// pluginUserKubeconfig writes a kubeconfig for a ServiceAccount of the
// test's namespace bound to the roles deploy/examples/kubectl-certmint-rbac.yaml
// gives to view and inspect, and nothing else.
func pluginUserKubeconfig(t *testing.T, f *framework.Framework, name string) string {
	t.Helper()
	ctx := t.Context()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := testCluster.Kubectl(ctx, "apply", "-f", filepath.Join(root, "deploy", "examples", "kubectl-certmint-rbac.yaml")).CombinedOutput(); err != nil {
		t.Fatalf("applying deploy/examples/kubectl-certmint-rbac.yaml: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := testCluster.Kubectl(ctx, "delete", "-f", filepath.Join(root, "deploy", "examples", "kubectl-certmint-rbac.yaml"), "--ignore-not-found").CombinedOutput(); err != nil {
			t.Errorf("deleting the plugin's roles: %v\n%s", err, out)
		}
	})
	createServiceAccounts(t, f, name)
	subject := rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: f.Namespace, Name: name}
	view := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: f.Namespace + "-" + name},
		Subjects:   []rbacv1.Subject{subject},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "certmint-plugin-view"},
	}
	if _, err := f.Client.RbacV1().ClusterRoleBindings().Create(ctx, view, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = f.Client.RbacV1().ClusterRoleBindings().Delete(context.Background(), view.Name, metav1.DeleteOptions{})
	})
	inspect := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: deploy.Namespace, Name: f.Namespace + "-" + name},
		Subjects:   []rbacv1.Subject{subject},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "certmint-plugin-inspect"},
	}
	if _, err := f.Client.RbacV1().RoleBindings(deploy.Namespace).Create(ctx, inspect, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	token, err := testCluster.Kubectl(ctx, "create", "token", name, "--namespace="+f.Namespace, "--duration=1h").Output()
	if err != nil {
		t.Fatalf("creating a token for %s: %v", name, err)
	}
	admin, err := clientcmd.LoadFromFile(testCluster.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cluster := admin.Clusters[admin.Contexts[admin.CurrentContext].Cluster]
	kc := clientcmdapi.NewConfig()
	kc.Clusters["e2e"] = cluster
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: strings.TrimSpace(string(token))}
	kc.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: name, Namespace: f.Namespace}
	kc.CurrentContext = "e2e"
	path := filepath.Join(t.TempDir(), name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// inspectVolume is what kubectl certmint inspect says of pod's volume tls.
func inspectVolume(t *testing.T, p pluginCommand, namespace, pod string) kubectlcertmint.VolumeReport {
	t.Helper()
	code, out, errOut := p.run(t, "inspect", "pod", pod, "-n", namespace, "-o", "json")
	var report kubectlcertmint.InspectReport
	if err := json.Unmarshal([]byte(out), &report); err != nil || code != kubectlcertmint.ExitOK || len(report.Volumes) != 1 || report.Volumes[0].Name != "tls" {
		t.Fatalf("inspect: exit %d, stdout %q, stderr %q (%v); want the pod's volume tls", code, out, errOut, err)
	}
	return report.Volumes[0]
}

// readMountedLeaf reads the leaf certificate mounted in pod, or says why it
// cannot.
func readMountedLeaf(f *framework.Framework, pod string) (*x509.Certificate, error) {
	out, err := f.Kubectl("exec", pod, "--", "/testapp", "cat", "--file=/tls/tls.crt")
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(out))
	if block == nil {
		return nil, fmt.Errorf("tls.crt of %s holds no PEM: %q", pod, out)
	}
	return x509.ParseCertificate(block.Bytes)
}
