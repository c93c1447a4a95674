package deploy

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// BackendPort is where an HTTPBackend pod serves HTTP; its Service serves
// port 80.
const BackendPort = 8080

// HTTPBackend is a pod name of the test app image answering every HTTP
// request with message, as user uid, and a Service name selecting it on
// port 80: what an Ingress routes to. Traefik finds the pod through the
// Service's EndpointSlices.
func HTTPBackend(name, image, message string, uid int64) (*corev1.Pod, *corev1.Service) {
	labels := map[string]string{"app": name}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			// The test clusters run no cluster DNS.
			DNSPolicy:       corev1.DNSDefault,
			SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: new(true), RunAsUser: new(uid), RunAsGroup: new(uid)},
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           image,
				ImagePullPolicy: corev1.PullNever,
				Args:            []string{"serve-http", fmt.Sprintf("--listen=:%d", BackendPort), "--message=" + message},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(BackendPort)}},
					PeriodSeconds: 1,
				},
			}},
		},
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(BackendPort)}},
		},
	}
	return pod, svc
}

// TLSIngress is an Ingress name of Traefik's class, with annotations,
// routing host to port 80 of service, with TLS from secretName.
func TLSIngress(name, host, service, secretName string, annotations map[string]string) *networkingv1.Ingress {
	return &networkingv1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec: networkingv1.IngressSpec{
			IngressClassName: new(TraefikIngressClass),
			TLS:              []networkingv1.IngressTLS{{Hosts: []string{host}, SecretName: secretName}},
			Rules: []networkingv1.IngressRule{{
				Host: host,
				IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
					Paths: []networkingv1.HTTPIngressPath{{
						Path:     "/",
						PathType: new(networkingv1.PathTypePrefix),
						Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{
							Name: service, Port: networkingv1.ServiceBackendPort{Number: 80},
						}},
					}},
				}},
			}},
		},
	}
}
