package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/certmint/certmint/pkg/pki"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/volumestatus"
	"github.com/certmint/certmint/test/e2e/deploy"
	"github.com/certmint/certmint/test/e2e/framework"
	"github.com/certmint/certmint/test/e2e/internal/repo"
	"github.com/certmint/certmint/test/testproc"
)

const (
	// prometheusPort is where Prometheus listens in the cluster's network
	// namespace, on the API server's address, where nothing else does.
	prometheusPort = 19090
	// prometheusInterval is how often it scrapes and evaluates the rules,
	// short so that the test waits seconds, not minutes.
	prometheusInterval = 2 * time.Second
	// prometheusTimeout bounds each wait on what Prometheus sees: a few
	// scrapes and evaluations, on two busy cores.
	prometheusTimeout = 90 * time.Second
)

// TestMetricsWithPrometheus scrapes the driver and the controller with a
// real Prometheus (Debian's), configured as docs/monitoring.md says, and
// loads into it the alerts and dashboard that deploy/monitoring ships. It
// checks that Prometheus reads the expiry of a real volume's certificate,
// the one mounted in the pod, labelled with its pod, volume and issuer;
// that the series goes when the pod does; that the controller reports the
// issuer Ready once (the leader, not every replica) with its CA's expiry;
// that the shipped alerts evaluate without error and the one about the
// test CA, which expires within a day, fires; that every query of the
// dashboard runs; and that the driver's /volumes, reached through the API
// server, describes the mounted certificate.
func TestMetricsWithPrometheus(t *testing.T) {
	f := framework.New(t, testCluster)
	sys := installCertmint(t, f)
	if _, err := deploy.CAClusterIssuer(t.Context(), testCluster.Config, caIssuer); err != nil {
		t.Fatal(err)
	}
	signer := request.IssuerRef{Kind: request.KindClusterIssuer, Name: caIssuer}.SignerName()
	node := testCluster.Nodes[0].Name
	const podName = "metrics"
	if _, err := f.Client.CoreV1().Pods(f.Namespace).Create(t.Context(), certPod(podName, node, "default", []string{"sleep"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.WaitForPodRunning(podName, podTimeout)
	leaf := mountedLeaf(t, f, podName)

	prom := startPrometheus(t, sys)

	t.Run("Prometheus reads the expiry of the mounted certificate, labelled with its pod, volume and issuer", func(t *testing.T) {
		f := f.WithT(t)
		query := fmt.Sprintf(`certmint_driver_certificate_not_after_timestamp_seconds{namespace=%q,pod=%q}`, f.Namespace, podName)
		want := map[string]string{"namespace": f.Namespace, "pod": podName, "volume": "tls", "issuer": signer}
		prom.waitFor(f, query, func(samples []sample) (bool, string) {
			if len(samples) != 1 {
				return false, fmt.Sprintf("%d series", len(samples))
			}
			s := samples[0]
			for k, v := range want {
				if s.Metric[k] != v {
					return false, fmt.Sprintf("labels %v, want %v", s.Metric, want)
				}
			}
			return s.Value == float64(leaf.NotAfter.Unix()), fmt.Sprintf("value %v, want tls.crt's notAfter %d", s.Value, leaf.NotAfter.Unix())
		})
		renewal := strings.Replace(query, "not_after", "renewal", 1)
		prom.waitFor(f, renewal, func(samples []sample) (bool, string) {
			return len(samples) == 1 && samples[0].Value > float64(leaf.NotBefore.Unix()) && samples[0].Value < float64(leaf.NotAfter.Unix()),
				fmt.Sprintf("%v, want one renewal time within the certificate's validity", samples)
		})
	})

	t.Run("the controller's leader reports the issuer Ready and when its CA expires", func(t *testing.T) {
		f := f.WithT(t)
		secret, err := sys.Client.CoreV1().Secrets(deploy.Namespace).Get(t.Context(), caIssuer, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		chain, err := pki.ParseCertificates(secret.Data[corev1.TLSCertKey])
		if err != nil {
			t.Fatal(err)
		}
		// Two replicas are scraped; a series from each would double every
		// alert.
		prom.waitFor(f, fmt.Sprintf(`certmint_issuer_ready{signer=%q}`, signer), func(samples []sample) (bool, string) {
			return len(samples) == 1 && samples[0].Value == 1, fmt.Sprintf("%v, want 1 from one replica", samples)
		})
		prom.waitFor(f, fmt.Sprintf(`certmint_issuer_ca_not_after_timestamp_seconds{signer=%q}`, signer), func(samples []sample) (bool, string) {
			return len(samples) == 1 && samples[0].Value == float64(chain[0].NotAfter.Unix()),
				fmt.Sprintf("%v, want the signing CA's notAfter %d", samples, chain[0].NotAfter.Unix())
		})
	})

	t.Run("the shipped alerts evaluate on the real series and the test CA's expiry fires", func(t *testing.T) {
		f := f.WithT(t)
		prom.waitFor(f, fmt.Sprintf(`ALERTS{alertname="CertmintCAExpiring",alertstate="firing",signer=%q}`, signer), func(samples []sample) (bool, string) {
			return len(samples) == 1, fmt.Sprintf("%v", samples)
		})
		prom.waitRulesHealthy(f)
		// The volume is healthy: nothing about it may fire.
		if samples := prom.query(t, fmt.Sprintf(`ALERTS{namespace=%q}`, f.Namespace)); len(samples) != 0 {
			t.Errorf("alerts about the test's pod: %v", samples)
		}
	})

	t.Run("every query of the shipped dashboard runs", func(t *testing.T) {
		for _, expr := range prom.dashboardQueries {
			// Grafana's variable, which Prometheus does not know.
			prom.query(t, strings.ReplaceAll(expr, "$__rate_interval", "1m"))
		}
		tables := prom.query(t, `sort(certmint_driver_certificate_not_after_timestamp_seconds - time())`)
		if !slices.ContainsFunc(tables, func(s sample) bool { return s.Metric["pod"] == podName }) {
			t.Errorf("the dashboard's volume table lacks pod %s: %v", podName, tables)
		}
	})

	t.Run("the driver's /volumes, through the API server, describes the mounted certificate", func(t *testing.T) {
		driver := driverPodOn(t, sys, node)
		body, err := sys.Client.CoreV1().Pods(deploy.Namespace).ProxyGet("http", driver.Name, strconv.Itoa(metricsPort(t, driver)), "/volumes",
			map[string]string{"namespace": f.Namespace, "pod": podName}).DoRaw(t.Context())
		if err != nil {
			t.Fatalf("GET /volumes of driver pod %s: %v", driver.Name, err)
		}
		var list volumestatus.List
		if err := json.Unmarshal(body, &list); err != nil {
			t.Fatalf("%v in %s", err, body)
		}
		if len(list.Volumes) != 1 || list.Node != node {
			t.Fatalf("/volumes = %s, want the one volume of %s on %s", body, podName, node)
		}
		v := list.Volumes[0]
		if c := v.Certificate; c == nil || c.SerialNumber != fmt.Sprintf("%x", leaf.SerialNumber) || !c.NotAfter.Equal(leaf.NotAfter) ||
			!slices.Equal(c.DNSNames, leaf.DNSNames) || len(c.URIs) != 1 || c.URIs[0] != leaf.URIs[0].String() {
			t.Errorf("/volumes describes %+v, want the certificate of tls.crt: serial %x, %v, %v, until %v",
				c, leaf.SerialNumber, leaf.DNSNames, leaf.URIs, leaf.NotAfter)
		}
		if strings.Contains(string(body), "PRIVATE KEY") {
			t.Errorf("/volumes shows a private key:\n%s", body)
		}
	})

	t.Run("the volume's series goes with its pod", func(t *testing.T) {
		f := f.WithT(t)
		deletePods(t, f, podName)
		prom.waitFor(f, fmt.Sprintf(`certmint_driver_certificate_not_after_timestamp_seconds{namespace=%q}`, f.Namespace), func(samples []sample) (bool, string) {
			return len(samples) == 0, fmt.Sprintf("%v", samples)
		})
	})
}

// mountedLeaf reads the leaf certificate mounted in pod.
func mountedLeaf(t *testing.T, f *framework.Framework, pod string) *x509.Certificate {
	t.Helper()
	certPEM := catFile(t, f, pod, "/tls/tls.crt")
	block, _ := pem.Decode([]byte(certPEM))
	if block == nil {
		t.Fatalf("tls.crt of %s holds no PEM: %q", pod, certPEM)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// metricsPort is the port pod serves /metrics on.
func metricsPort(t *testing.T, pod *corev1.Pod) int {
	t.Helper()
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "metrics" {
				return int(p.ContainerPort)
			}
		}
	}
	t.Fatalf("pod %s has no port named metrics", pod.Name)
	return 0
}

// prometheus is a Prometheus running for a test.
type prometheus struct {
	url string
	// dashboardQueries are the expressions of the shipped dashboard.
	dashboardQueries []string
}

// sample is one series of an instant query's answer.
type sample struct {
	Metric map[string]string
	Value  float64
}

// startPrometheus runs Prometheus in the cluster's network namespace,
// scraping every driver and controller pod with the shipped rules loaded:
// those of the PrometheusRule that `kubectl kustomize deploy/monitoring`
// renders.
func startPrometheus(t *testing.T, sys *framework.Framework) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus is not installed (Debian package prometheus; hack/deps.sh installs it): %v", err)
	}
	dir := t.TempDir()
	rules, dashboard := renderMonitoring(t, dir)
	targets := func(name string) []string {
		pods, err := sys.Client.CoreV1().Pods(deploy.Namespace).List(t.Context(), metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + name})
		if err != nil || len(pods.Items) == 0 {
			t.Fatalf("finding the %s pods: %d pods, %v", name, len(pods.Items), err)
		}
		var out []string
		for i := range pods.Items {
			p := &pods.Items[i]
			out = append(out, net.JoinHostPort(p.Status.PodIP, strconv.Itoa(metricsPort(t, p))))
		}
		return out
	}
	// honor_labels, as the shipped ServiceMonitors have: the volumes'
	// namespace and pod labels must win over the target's.
	config := map[string]any{
		"global":     map[string]any{"scrape_interval": prometheusInterval.String(), "evaluation_interval": prometheusInterval.String()},
		"rule_files": []string{rules},
		"scrape_configs": []map[string]any{
			{"job_name": "certmint-driver", "honor_labels": true, "static_configs": []map[string]any{{"targets": targets(deploy.DriverDaemonSet)}}},
			{"job_name": "certmint-controller", "honor_labels": true, "static_configs": []map[string]any{{"targets": targets(deploy.ControllerDeployment)}}},
		},
	}
	data, err := yaml.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(testCluster.APIServerIP(), strconv.Itoa(prometheusPort))
	proc := testproc.Start(t, testCluster.Command, filepath.Join(dir, "prometheus.log"), nil, bin,
		"--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	p := &prometheus{url: "http://" + addr, dashboardQueries: dashboard}
	err = framework.Wait(t.Context(), "Prometheus to be ready at "+p.url, time.Minute, func(ctx context.Context) (bool, string, error) {
		select {
		case <-proc.Done():
			return false, "", fmt.Errorf("prometheus exited: %w\n%s", proc.Err(), testproc.Tail(proc.Log(), 20))
		default:
		}
		code, body, err := p.get(ctx, "/-/ready")
		if err != nil {
			return false, err.Error(), nil
		}
		return code == http.StatusOK, body, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// renderMonitoring renders deploy/monitoring as a user applies it, writes
// its PrometheusRule's rules into dir as a rules file and returns that
// file, and the queries of its dashboard.
func renderMonitoring(t *testing.T, dir string) (rulesFile string, queries []string) {
	t.Helper()
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	out, err := testCluster.Kubectl(t.Context(), "kustomize", filepath.Join(root, "deploy", "monitoring")).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize deploy/monitoring: %v", err)
	}
	for doc := range strings.SplitSeq(string(out), "\n---\n") {
		var obj struct {
			Kind string            `json:"kind"`
			Spec json.RawMessage   `json:"spec"`
			Data map[string]string `json:"data"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatal(err)
		}
		switch obj.Kind {
		case "PrometheusRule":
			rulesFile = filepath.Join(dir, "certmint.rules.yaml")
			if err := os.WriteFile(rulesFile, obj.Spec, 0o600); err != nil {
				t.Fatal(err)
			}
		case "ConfigMap":
			var dashboard struct {
				Panels []struct {
					Targets []struct {
						Expr string `json:"expr"`
					} `json:"targets"`
				} `json:"panels"`
			}
			if err := json.Unmarshal([]byte(obj.Data["certmint.json"]), &dashboard); err != nil {
				t.Fatalf("the dashboard's JSON: %v", err)
			}
			for _, p := range dashboard.Panels {
				for _, target := range p.Targets {
					queries = append(queries, target.Expr)
				}
			}
		}
	}
	if rulesFile == "" || len(queries) == 0 {
		t.Fatalf("deploy/monitoring rendered no PrometheusRule or no dashboard queries:\n%s", out)
	}
	return rulesFile, queries
}

func (p *prometheus) get(ctx context.Context, path string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url+path, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// tryQuery runs an instant query.
func (p *prometheus) tryQuery(ctx context.Context, query string) ([]sample, error) {
	code, body, err := p.get(ctx, "/api/v1/query?query="+url.QueryEscape(query))
	if err != nil {
		return nil, err
	}
	var answer struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil || code != http.StatusOK || answer.Status != "success" {
		return nil, fmt.Errorf("query %s: %d %s", query, code, body)
	}
	var out []sample
	for _, r := range answer.Data.Result {
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("query %s: value %v: %w", query, r.Value, err)
		}
		out = append(out, sample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// query runs an instant query that must succeed.
func (p *prometheus) query(t *testing.T, query string) []sample {
	t.Helper()
	samples, err := p.tryQuery(t.Context(), query)
	if err != nil {
		t.Fatal(err)
	}
	return samples
}

// waitFor waits until ok accepts the answer to query, reporting what ok
// said of the last answer, and the scrape targets' health, on a timeout.
func (p *prometheus) waitFor(f *framework.Framework, query string, ok func([]sample) (bool, string)) {
	f.T.Helper()
	f.WaitFor("Prometheus to answer "+query+" as expected", prometheusTimeout, func(ctx context.Context) (bool, string, error) {
		samples, err := p.tryQuery(ctx, query)
		if err != nil {
			return false, err.Error(), nil
		}
		done, state := ok(samples)
		if !done {
			state += "; " + p.targets(ctx)
		}
		return done, state, nil
	})
}

// targets summarizes the health of the scrape targets.
func (p *prometheus) targets(ctx context.Context) string {
	_, body, err := p.get(ctx, "/api/v1/targets")
	if err != nil {
		return "targets: " + err.Error()
	}
	var answer struct {
		Data struct {
			ActiveTargets []struct {
				ScrapeURL string `json:"scrapeUrl"`
				Health    string `json:"health"`
				LastError string `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &answer); err != nil {
		return "targets: " + body
	}
	var out []string
	for _, target := range answer.Data.ActiveTargets {
		out = append(out, fmt.Sprintf("%s %s %s", target.ScrapeURL, target.Health, target.LastError))
	}
	return "targets: " + strings.Join(out, ", ")
}

// waitRulesHealthy waits until Prometheus has evaluated every shipped
// alert, and fails if any evaluation fails.
func (p *prometheus) waitRulesHealthy(f *framework.Framework) {
	f.T.Helper()
	f.WaitFor("Prometheus to evaluate every shipped alert", prometheusTimeout, func(ctx context.Context) (bool, string, error) {
		_, body, err := p.get(ctx, "/api/v1/rules?type=alert")
		if err != nil {
			return false, err.Error(), nil
		}
		var answer struct {
			Data struct {
				Groups []struct {
					Rules []struct {
						Name      string `json:"name"`
						Health    string `json:"health"`
						LastError string `json:"lastError"`
					} `json:"rules"`
				} `json:"groups"`
			} `json:"data"`
		}
		if err := json.Unmarshal([]byte(body), &answer); err != nil {
			return false, "", fmt.Errorf("%w in %s", err, body)
		}
		var pending []string
		for _, g := range answer.Data.Groups {
			for _, r := range g.Rules {
				switch r.Health {
				case "ok":
				case "err":
					return false, "", fmt.Errorf("alert %s fails to evaluate: %s", r.Name, r.LastError)
				default:
					pending = append(pending, r.Name+" "+r.Health)
				}
			}
		}
		if len(answer.Data.Groups) == 0 {
			return false, "", fmt.Errorf("prometheus loaded no alerts: %s", body)
		}
		return len(pending) == 0, fmt.Sprintf("not evaluated yet: %v", pending), nil
	})
}
