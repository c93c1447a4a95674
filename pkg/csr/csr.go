// Package csr requests certificates through certificates.k8s.io/v1
// CertificateSigningRequests and waits for their outcome with one long-lived
// watch on the node's requests, never by polling.
package csr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"

	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/request"
)

// Requester creates a CSR and waits for its outcome.
type Requester interface {
	// Request creates csr and returns the PEM certificate chain once the
	// CSR is approved and issued. It returns a *DeniedError or *FailedError
	// when the signer refuses, an error when someone else deletes the CSR
	// before it is issued, or the context's error. The CSR is deleted
	// once its outcome is read, or when ctx ends first; the deletion runs
	// in the background, off the caller's critical path.
	Request(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (*Issued, error)
}

// Issued is a request the signer answered with a certificate.
type Issued struct {
	// Chain is the PEM certificate chain, leaf first.
	Chain []byte
	// Created is the request's creationTimestamp, on the API server's
	// clock: what an issuer's status.reissueBefore is compared with.
	Created time.Time
}

var _ Requester = (*Client)(nil)

// DeniedError is a request the approver denied.
type DeniedError struct {
	Name, Reason, Message string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("CertificateSigningRequest %s was denied: %s", e.Name, e.Detail())
}

// Detail is the approver's reason and message, for users.
func (e *DeniedError) Detail() string { return describe(e.Reason, e.Message) }

// FailedError is a request the signer could not sign.
type FailedError struct {
	Name, Reason, Message string
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("signing CertificateSigningRequest %s failed: %s", e.Name, e.Detail())
}

// Detail is the signer's reason and message, for users.
func (e *FailedError) Detail() string { return describe(e.Reason, e.Message) }

func describe(reason, message string) string {
	switch {
	case reason == "":
		return message
	case message == "":
		return reason
	}
	return reason + ": " + message
}

// deleteTimeout bounds the clean-up of a request after its caller gave up.
const deleteTimeout = 10 * time.Second

// Options configure a Client.
type Options struct {
	// Client talks to the API server with the driver's own credentials
	// (NewAPI). Required.
	Client API
	// NodeName labels requests so that each node's driver watches only its
	// own. Required.
	NodeName string
	// Logger; zero discards.
	Logger logr.Logger
}

// Client is a Requester backed by the API server.
type Client struct {
	csrs     API
	nodeName string
	log      logr.Logger
	informer cache.SharedIndexInformer

	mu      sync.Mutex
	waiters map[string]chan outcome
	// deletes tracks background deletions, so Run can wait for them.
	deletes sync.WaitGroup
}

type outcome struct {
	chain []byte
	err   error
}

// New returns a Client; call Run before Request.
func New(opts Options) (*Client, error) {
	switch {
	case opts.Client == nil:
		return nil, errors.New("csr: Client is required")
	case opts.NodeName == "":
		return nil, errors.New("csr: NodeName is required")
	}
	selector := labels.Set{request.LabelManagedBy: request.DriverName, request.LabelNode: opts.NodeName}.String()
	// Built here rather than by client-go's informers package, which links
	// the clients of every API group. As the informers it makes do, it asks
	// the client whether it can stream a watch's initial list (fakes
	// cannot).
	lw := cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = selector
			return opts.Client.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = selector
			return opts.Client.Watch(ctx, o)
		},
	}, opts.Client)
	informer := cache.NewSharedIndexInformer(lw, &certificatesv1.CertificateSigningRequest{}, 0, cache.Indexers{})
	c := &Client{
		csrs:     opts.Client,
		nodeName: opts.NodeName,
		log:      opts.Logger,
		informer: informer,
		waiters:  map[string]chan outcome{},
	}
	_, err := c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.observe,
		UpdateFunc: func(_, obj any) { c.observe(obj) },
		DeleteFunc: c.observeDeletion,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Run watches the node's requests until ctx ends, then waits for pending
// deletions.
func (c *Client) Run(ctx context.Context) {
	c.informer.RunWithContext(ctx)
	c.deletes.Wait()
}

// HasSynced reports whether the watch is established; until then outcomes
// may arrive late, but none are lost.
func (c *Client) HasSynced() bool {
	return c.informer.HasSynced()
}

// observe hands a finished request to the caller waiting for it. The object
// is the informer's cached copy and must not be changed.
func (c *Client) observe(obj any) {
	csr, ok := obj.(*certificatesv1.CertificateSigningRequest)
	if !ok {
		return
	}
	if out, done := outcomeOf(csr); done {
		c.deliver(csr.Name, out)
	}
}

// observeDeletion fails the caller waiting for a request someone else
// deleted (the driver stops waiting before it deletes its own), so the
// caller need not wait for its deadline. The object may be the informer's
// last known state of a deletion its watch missed.
func (c *Client) observeDeletion(obj any) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	csr, ok := obj.(*certificatesv1.CertificateSigningRequest)
	if !ok {
		return
	}
	out, done := outcomeOf(csr)
	if !done {
		// A request deleted after it finished still has its outcome; the
		// watch may have missed the update that carried it.
		out = outcome{err: fmt.Errorf("CertificateSigningRequest %s was deleted before it was issued", csr.Name)}
	}
	c.deliver(csr.Name, out)
}

// deliver hands out to the caller waiting for the request name, if any.
func (c *Client) deliver(name string, out outcome) {
	c.mu.Lock()
	ch := c.waiters[name]
	delete(c.waiters, name)
	c.mu.Unlock()
	if ch != nil {
		ch <- out // buffered, and each waiter gets exactly one send
	}
}

// outcomeOf reports whether csr is finished and how.
func outcomeOf(csr *certificatesv1.CertificateSigningRequest) (outcome, bool) {
	approved := false
	for _, cond := range csr.Status.Conditions {
		if cond.Status != corev1.ConditionTrue {
			continue
		}
		switch cond.Type {
		case certificatesv1.CertificateDenied:
			return outcome{err: &DeniedError{Name: csr.Name, Reason: cond.Reason, Message: cond.Message}}, true
		case certificatesv1.CertificateFailed:
			return outcome{err: &FailedError{Name: csr.Name, Reason: cond.Reason, Message: cond.Message}}, true
		case certificatesv1.CertificateApproved:
			approved = true
		}
	}
	if approved && len(csr.Status.Certificate) > 0 {
		return outcome{chain: csr.Status.Certificate}, true
	}
	return outcome{}, false
}

// Request implements Requester. It sets the name (if empty) and the labels
// the watch selects on; the caller sets everything else.
func (c *Client) Request(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (*Issued, error) {
	csr = csr.DeepCopy()
	if csr.Name == "" {
		// A name chosen here, not by the API server, lets the waiter be
		// registered before the object exists: its outcome cannot be missed.
		csr.Name = "certmint-" + randomSuffix()
	}
	if csr.Labels == nil {
		csr.Labels = map[string]string{}
	}
	csr.Labels[request.LabelManagedBy] = request.DriverName
	csr.Labels[request.LabelNode] = c.nodeName

	ch := make(chan outcome, 1)
	c.mu.Lock()
	c.waiters[csr.Name] = ch
	c.mu.Unlock()

	created, err := c.csrs.Create(ctx, csr, metav1.CreateOptions{})
	if err != nil {
		c.forget(csr.Name)
		return nil, fmt.Errorf("creating CertificateSigningRequest: %w", err)
	}
	log := c.log.WithValues(logkeys.CSR, csr.Name)
	log.V(2).Info("Created CertificateSigningRequest", logkeys.SignerName, csr.Spec.SignerName)

	// Finished or abandoned, the request has served its purpose; CSRs have
	// no owner a garbage collector could follow. Deleting takes an API
	// round trip the caller need not wait for.
	c.deletes.Add(1)
	defer func() {
		// Stop waiting first: the deletion below must not count as someone
		// else's.
		c.forget(csr.Name)
		go func() {
			defer c.deletes.Done()
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), deleteTimeout)
			defer cancel()
			// Someone else may have deleted it already.
			if err := c.csrs.Delete(dctx, csr.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				log.Error(err, "Deleting CertificateSigningRequest")
			}
		}()
	}()

	select {
	case out := <-ch:
		if out.err != nil {
			return nil, out.err
		}
		return &Issued{Chain: out.chain, Created: created.CreationTimestamp.Time}, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for CertificateSigningRequest %s: %w", csr.Name, context.Cause(ctx))
	}
}

// DeleteLeftovers deletes the node's requests that an earlier run of the
// driver left behind when it stopped while waiting for them; nobody waits for
// their outcome any more. Call it before the first Request.
func (c *Client) DeleteLeftovers(ctx context.Context) error {
	selector := labels.Set{request.LabelManagedBy: request.DriverName, request.LabelNode: c.nodeName}.String()
	list, err := c.csrs.List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return fmt.Errorf("listing the node's CertificateSigningRequests: %w", err)
	}
	var errs []error
	for _, r := range list.Items {
		if err := c.csrs.Delete(ctx, r.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		c.log.Info("Deleted a CertificateSigningRequest an earlier run left behind", logkeys.CSR, r.Name)
	}
	return errors.Join(errs...)
}

// forget stops waiting for the request name.
func (c *Client) forget(name string) {
	c.mu.Lock()
	delete(c.waiters, name)
	c.mu.Unlock()
}

func randomSuffix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}
