package framework

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestNamespaceNameIsAValidUniqueLabel(t *testing.T) {
	for _, testName := range []string{
		"TestSmoke",
		"TestCSI/renews_before_expiry_(ECDSA)",
		strings.Repeat("TestVeryLong/", 20),
	} {
		a, b := namespaceName(testName), namespaceName(testName)
		if errs := validation.IsDNS1123Label(a); len(errs) > 0 {
			t.Errorf("namespaceName(%q) = %q: %v", testName, a, errs)
		}
		if a == b {
			t.Errorf("namespaceName(%q) returned %q twice", testName, a)
		}
	}
}
