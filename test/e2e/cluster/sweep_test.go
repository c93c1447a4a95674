package cluster

import "testing"

func TestUnescapeMountPath(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"a plain path is unchanged", "/tmp/certmint-e2e/run-1/nodes", "/tmp/certmint-e2e/run-1/nodes"},
		{"an escaped space becomes a space", `/tmp/a\040b`, "/tmp/a b"},
		{"an escaped backslash becomes a backslash", `/tmp/a\134b`, `/tmp/a\b`},
		{"a backslash without three octal digits stays", `/tmp/a\x`, `/tmp/a\x`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := unescapeMountPath(c.in); got != c.want {
				t.Errorf("unescapeMountPath(%q) = %q, want %q", c.in, got, c.want)
			}
		})
	}
}
