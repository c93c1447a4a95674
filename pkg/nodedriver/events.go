package nodedriver

import (
	"context"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
)

// eventSink writes the event recorder's Events as client-go's typed core/v1
// client does. That client, and the scheme of every API group it brings,
// would be most of the driver's binary for this one resource.
type eventSink struct{ client rest.Interface }

var _ record.EventSink = eventSink{}

// newEventSink returns an eventSink and the scheme its Events are typed in,
// which the recorder needs too.
func newEventSink(cfg *rest.Config, httpClient *http.Client) (eventSink, *runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return eventSink{}, nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &corev1.SchemeGroupVersion
	cfg.APIPath = "/api"
	cfg.NegotiatedSerializer = rest.CodecFactoryForGeneratedClient(scheme, serializer.NewCodecFactory(scheme)).WithoutConversion()
	client, err := rest.RESTClientForConfigAndClient(cfg, httpClient)
	if err != nil {
		return eventSink{}, nil, err
	}
	return eventSink{client}, scheme, nil
}

func (s eventSink) Create(event *corev1.Event) (*corev1.Event, error) {
	result := &corev1.Event{}
	err := s.client.Post().NamespaceIfScoped(event.Namespace, event.Namespace != "").Resource("events").Body(event).Do(context.Background()).Into(result)
	return result, err
}

func (s eventSink) Update(event *corev1.Event) (*corev1.Event, error) {
	result := &corev1.Event{}
	err := s.client.Put().NamespaceIfScoped(event.Namespace, event.Namespace != "").Resource("events").Name(event.Name).Body(event).Do(context.Background()).Into(result)
	return result, err
}

func (s eventSink) Patch(event *corev1.Event, data []byte) (*corev1.Event, error) {
	result := &corev1.Event{}
	err := s.client.Patch(types.StrategicMergePatchType).NamespaceIfScoped(event.Namespace, event.Namespace != "").Resource("events").Name(event.Name).
		Body(data).Do(context.Background()).Into(result)
	return result, err
}
