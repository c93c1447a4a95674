package request

import "testing"

func TestSignerNameRoundTrips(t *testing.T) {
	for _, ref := range []IssuerRef{
		{Kind: KindIssuer, Namespace: "team-a", Name: "ca"},
		{Kind: KindIssuer, Namespace: "team-a", Name: "ca.with.dots"},
		{Kind: KindClusterIssuer, Name: "cluster-ca"},
	} {
		got, ok := ParseSignerName(ref.SignerName())
		if !ok || got != ref {
			t.Errorf("ParseSignerName(%q) = %+v, %v; want %+v", ref.SignerName(), got, ok, ref)
		}
	}
}

func TestParseSignerNameRejectsForeignSigners(t *testing.T) {
	for _, s := range []string{
		"kubernetes.io/kube-apiserver-client",
		"issuers.certmint.io/no-dot",
		"issuers.certmint.io/.name",
		"issuers.certmint.io/ns.",
		"clusterissuers.certmint.io/",
		"clusterissuers.certmint.io",
		"example.com/issuers.certmint.io",
	} {
		if ref, ok := ParseSignerName(s); ok {
			t.Errorf("ParseSignerName(%q) = %+v, want not ours", s, ref)
		}
	}
}
