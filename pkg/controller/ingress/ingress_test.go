package ingress

import (
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestDesired(t *testing.T) {
	ing := func(annotations map[string]string, tls ...networkingv1.IngressTLS) *networkingv1.Ingress {
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", Annotations: annotations}, Spec: networkingv1.IngressSpec{TLS: tls}}
	}
	entry := func(secret string, hosts ...string) networkingv1.IngressTLS {
		return networkingv1.IngressTLS{SecretName: secret, Hosts: hosts}
	}
	for _, c := range []struct {
		name    string
		ing     *networkingv1.Ingress
		want    map[string]string // Certificate name → kind/issuer hosts
		problem string
		// keep: nothing changes.
		keep bool
	}{
		{name: "no annotation, no Certificates", ing: ing(nil, entry("a", "a.example.com"))},
		{name: "an Issuer, one Certificate per Secret", ing: ing(map[string]string{AnnotationIssuer: "ca"},
			entry("a", "a.example.com"), entry("b", "b.example.com", "c.example.com"), entry("a", "d.example.com", "a.example.com")),
			want: map[string]string{"a": "Issuer/ca a.example.com,d.example.com", "b": "Issuer/ca b.example.com,c.example.com"}},
		{name: "a ClusterIssuer", ing: ing(map[string]string{AnnotationClusterIssuer: "public"}, entry("a", "a.example.com")),
			want: map[string]string{"a": "ClusterIssuer/public a.example.com"}},
		{name: "both annotations", ing: ing(map[string]string{AnnotationIssuer: "ca", AnnotationClusterIssuer: "public"}, entry("a", "a.example.com")),
			problem: "set one", keep: true},
		{name: "an empty annotation", ing: ing(map[string]string{AnnotationIssuer: " "}, entry("a", "a.example.com")), problem: "is empty", keep: true},
		{name: "a bad duration", ing: ing(map[string]string{AnnotationIssuer: "ca", AnnotationDuration: "90d"}, entry("a", "a.example.com")), problem: AnnotationDuration + " must be", keep: true},
		{name: "a duration shorter than a Certificate may have", ing: ing(map[string]string{AnnotationIssuer: "ca", AnnotationDuration: "5m"}, entry("a", "a.example.com")),
			problem: "at least 10m0s", keep: true},
		{name: "renewBefore not shorter than the duration", ing: ing(map[string]string{AnnotationIssuer: "ca", AnnotationDuration: "1h", AnnotationRenewBefore: "1h"}, entry("a", "a.example.com")),
			problem: "must be shorter than", keep: true},
		{name: "durations", ing: ing(map[string]string{AnnotationIssuer: "ca", AnnotationDuration: "2h", AnnotationRenewBefore: "30m"}, entry("a", "a.example.com")),
			want: map[string]string{"a": "Issuer/ca a.example.com 2h0m0s 30m0s"}},
		{name: "an entry without a Secret or hosts", ing: ing(map[string]string{AnnotationIssuer: "ca"}, entry("", "a.example.com"), entry("b"), entry("c", "c.example.com")),
			want: map[string]string{"c": "Issuer/ca c.example.com"}, problem: "spec.tls[0], spec.tls[1] name no secretName or no hosts"},
	} {
		t.Run(c.name, func(t *testing.T) {
			certs, problem, ok := desired(c.ing)
			if ok == c.keep {
				t.Errorf("ok %v, want %v", ok, !c.keep)
			}
			got := map[string]string{}
			for _, cert := range certs {
				if cert.Spec.SecretName != cert.Name || cert.Namespace != "shop" {
					t.Errorf("Certificate %s/%s keeps Secret %s", cert.Namespace, cert.Name, cert.Spec.SecretName)
				}
				got[cert.Name] = cert.Spec.IssuerRef.Kind + "/" + cert.Spec.IssuerRef.Name + " " + strings.Join(cert.Spec.DNSNames, ",")
				if d, r := cert.Spec.Duration, cert.Spec.RenewBefore; d != nil && r != nil {
					got[cert.Name] += " " + d.Duration.String() + " " + r.Duration.String()
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("Certificates %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Errorf("Certificate %s: %q, want %q", k, got[k], v)
				}
			}
			if (c.problem == "") != (problem == "") || !strings.Contains(problem, c.problem) {
				t.Errorf("problem %q, want %q", problem, c.problem)
			}
		})
	}
}
