package kubectlcertmint

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
)

// driverSelector selects the driver's pods, in deploy/ and in the Helm
// chart alike.
const driverSelector = "app.kubernetes.io/name=certmint-driver"

// driverPortName is the name of the driver container's port that serves
// /metrics and /volumes.
const driverPortName = "metrics"

// driverVolumes is the driver's answer to GET /volumes (docs/driver.md).
// The plugin decodes it with types of its own rather than the driver's:
// the two are separate binaries, possibly of different versions, and this
// JSON is their contract.
type driverVolumes struct {
	Node    string         `json:"node"`
	Volumes []driverVolume `json:"volumes"`
}

type driverVolume struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	PodUID    string `json:"podUID"`
	Volume    struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"volume"`
	Issuer             *Issuer       `json:"issuer"`
	Certificate        *Certificate  `json:"certificate"`
	RenewalTime        *time.Time    `json:"renewalTime"`
	NextRenewalAttempt *time.Time    `json:"nextRenewalAttempt"`
	Renewing           bool          `json:"renewing"`
	LastRenewalError   *RenewalError `json:"lastRenewalError"`
	Stranded           string        `json:"stranded"`
}

// Certificate is what a volume's current certificate says, as its driver
// reads it. A stranded volume has only its validity.
type Certificate struct {
	Subject        string   `json:"subject,omitempty"`
	DNSNames       []string `json:"dnsNames,omitempty"`
	IPAddresses    []string `json:"ipAddresses,omitempty"`
	URIs           []string `json:"uris,omitempty"`
	EmailAddresses []string `json:"emailAddresses,omitempty"`
	// SerialNumber is lower-case hexadecimal.
	SerialNumber string    `json:"serialNumber,omitempty"`
	NotBefore    time.Time `json:"notBefore"`
	NotAfter     time.Time `json:"notAfter"`
}

// RenewalError is a volume's last failed renewal.
type RenewalError struct {
	Message        string    `json:"message"`
	Time           time.Time `json:"time"`
	FailuresInARow int       `json:"failuresInARow"`
}

// driverPod finds the running driver pod on node.
func driverPod(ctx context.Context, kube kubernetes.Interface, namespace, node string) (*corev1.Pod, error) {
	pods, err := kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{
		LabelSelector: driverSelector,
		FieldSelector: fields.OneTermEqualSelector("spec.nodeName", node).String(),
	})
	if err != nil {
		return nil, fmt.Errorf("finding the certmint driver pod on node %s in namespace %s: %w", node, namespace, err)
	}
	// During a rolling update the old pod may still be there, going.
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName == node && p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			return p, nil
		}
	}
	return nil, fmt.Errorf("no running certmint driver pod (%s) on node %s in namespace %s; is certmint installed elsewhere? (--certmint-namespace)",
		driverSelector, node, namespace)
}

// volumesOf asks driver, through the API server's pod proxy, for the
// volumes it holds of pod namespace/name.
func volumesOf(ctx context.Context, kube kubernetes.Interface, driver *corev1.Pod, namespace, name string) (*driverVolumes, error) {
	port := 0
	for _, c := range driver.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == driverPortName {
				port = int(p.ContainerPort)
			}
		}
	}
	if port == 0 {
		return nil, fmt.Errorf("driver pod %s/%s has no port named %s: it serves no /volumes (its --metrics-addr is empty)", driver.Namespace, driver.Name, driverPortName)
	}
	body, err := kube.CoreV1().Pods(driver.Namespace).ProxyGet("http", driver.Name, strconv.Itoa(port), "volumes",
		map[string]string{"namespace": namespace, "pod": name}).DoRaw(ctx)
	if apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("reading /volumes of driver pod %s/%s through the API server needs get on pods/proxy in namespace %s: %w",
			driver.Namespace, driver.Name, driver.Namespace, err)
	}
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("driver pod %s/%s serves no /volumes: is it older than the plugin? %w", driver.Namespace, driver.Name, err)
	}
	if err != nil {
		return nil, fmt.Errorf("reading /volumes of driver pod %s/%s: %w", driver.Namespace, driver.Name, err)
	}
	var list driverVolumes
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("reading /volumes of driver pod %s/%s: %w", driver.Namespace, driver.Name, err)
	}
	return &list, nil
}
