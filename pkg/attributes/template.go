package attributes

import (
	"fmt"
	"strings"

	"github.com/certmint/certmint/pkg/request"
)

// Template variables users can put in identity attributes; each stands for a
// fact about the pod the kubelet passes to the driver.
const (
	VarPodName            = "POD_NAME"
	VarPodNamespace       = "POD_NAMESPACE"
	VarPodUID             = "POD_UID"
	VarServiceAccountName = "SERVICE_ACCOUNT_NAME"
)

// Template variables of the ip-sans attribute alone: the pod's addresses.
// The kubelet does not pass them, and the pod has none when its volume is
// first published, so they are not expanded at parse time; see PodIPs.
const (
	VarPodIP  = "POD_IP"
	VarPodIPs = "POD_IPS"
)

// Pod is the pod a volume belongs to, as the kubelet describes it.
type Pod struct {
	Name               string
	Namespace          string
	UID                string
	ServiceAccountName string
}

func (p Pod) variables() map[string]string {
	return map[string]string{
		VarPodName:            p.Name,
		VarPodNamespace:       p.Namespace,
		VarPodUID:             p.UID,
		VarServiceAccountName: p.ServiceAccountName,
	}
}

// Expand replaces every ${NAME} in s with the pod's value for NAME. An unknown
// name, a name whose value is empty or an unterminated ${ is an error: a mistyped variable left in a DNS
// name would otherwise ask for a certificate nobody wanted. A "$" not
// followed by "{" is kept as it is.
func Expand(s string, pod Pod) (string, error) {
	vars := pod.variables()
	var b strings.Builder
	for {
		start := strings.Index(s, "${")
		if start < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:start])
		end := strings.IndexByte(s[start:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated variable %s: write ${NAME}", request.Quote(s[start:]))
		}
		name := s[start+2 : start+end]
		value, ok := vars[name]
		if name == VarPodIP || name == VarPodIPs {
			return "", fmt.Errorf("${%s} may be used only in %s, as a whole element", name, IPSANs)
		}
		if !ok {
			if len(name) > 64 {
				name = name[:64] + "…"
			}
			return "", fmt.Errorf("unknown variable ${%s}: use ${%s}, ${%s}, ${%s} or ${%s}",
				name, VarPodName, VarPodNamespace, VarPodUID, VarServiceAccountName)
		}
		if value == "" {
			// An empty value would leave an empty label or path segment,
			// which names nothing anyone meant.
			return "", fmt.Errorf("${%s} is empty for this pod", name)
		}
		b.WriteString(value)
		s = s[start+end+1:]
	}
}
