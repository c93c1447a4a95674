package attributes

import (
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	pod := Pod{Name: "web-0", Namespace: "shop", UID: "uid-1", ServiceAccountName: "web"}
	cases := []struct {
		name, in, want, err string
	}{
		{"text without variables is unchanged", "example.com", "example.com", ""},
		{"every variable is replaced", "${POD_NAME}.${POD_NAMESPACE}/${POD_UID}/${SERVICE_ACCOUNT_NAME}", "web-0.shop/uid-1/web", ""},
		{"a variable may repeat", "${POD_NAME}-${POD_NAME}", "web-0-web-0", ""},
		{"a dollar without a brace is literal", "a$b$", "a$b$", ""},
		{"an unknown variable is an error", "${NODE_NAME}", "", "unknown variable ${NODE_NAME}"},
		{"an empty variable name is an error", "${}", "", "unknown variable ${}"},
		{"a lower-case name is unknown", "${pod_name}", "", "unknown variable"},
		{"an unterminated variable is an error", "x-${POD_NAME", "", "unterminated variable"},
		{"the pod's address is not text to expand", "${POD_IP}", "", "${POD_IP} may be used only in csi.certmint.io/ip-sans"},
		{"nor are its addresses", "a-${POD_IPS}", "", "${POD_IPS} may be used only in"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Expand(c.in, pod)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("Expand(%q) error = %v, want %q", c.in, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("Expand(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
		})
	}
}
