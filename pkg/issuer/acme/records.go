package acme

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/certmint/certmint/pkg/apis/certmint/v1alpha1"
	"github.com/certmint/certmint/pkg/issuer"
)

// LabelOwner is the UID of the request an Order is for, so the Orders of
// earlier issuances of the same Certificate are found and removed.
const LabelOwner = "certmint.io/request-uid"

// records are the Order and Challenges that show one order to people
// (kubectl get orders,challenges). Nothing reads them back to issue: a
// failure to write one is logged, and the order goes on. Their status is
// written once at the end of a pass, and only when it changed, so an
// issuance costs a handful of writes however many passes it takes.
type records struct {
	// order is what the Order says; created is true once it exists, and
	// written is its status as last written.
	order   *v1alpha1.Order
	created bool
	written v1alpha1.OrderStatus
	// challenges are the Challenges, by authorization URL.
	challenges map[string]*challengeRecord
}

type challengeRecord struct {
	challenge *v1alpha1.Challenge
	created   bool
	written   v1alpha1.ChallengeStatus
}

// recordName is a name for the Order of the request owner made with
// csrDER: the owner's, and a hash of the request, as one owner (a
// Certificate) has an Order per issuance.
func recordName(owner string, csrDER []byte) string {
	sum := sha256.Sum256(csrDER)
	// Room for the hash and a Challenge's suffix within 253 characters.
	return strings.TrimRight(truncate(strings.ToLower(owner), 230), ".-") + "-" + hex.EncodeToString(sum[:4])
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// createOrderRecord makes the Order of the request, owned by it, when it
// has an owner and the Order does not exist yet, and removes the Orders of
// the owner's earlier requests: the latest tells the story.
func (b *Backend) createOrderRecord(ctx context.Context, st *orderState, iss v1alpha1.GenericIssuer, req *issuer.Request, names []string) {
	if req.Owner == nil || st.records.created {
		return
	}
	o := &v1alpha1.Order{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       req.Namespace,
			Name:            recordName(req.Owner.Name, req.CSR),
			Labels:          map[string]string{LabelOwner: string(req.Owner.UID)},
			OwnerReferences: []metav1.OwnerReference{*req.Owner},
		},
		Spec: v1alpha1.OrderSpec{
			IssuerName: iss.GetName(),
			Request:    v1alpha1.OrderRequest{Kind: req.Owner.Kind, Name: req.Owner.Name},
			DNSNames:   names,
		},
		Status: st.records.order.Status,
	}
	if req.Duration > 0 {
		o.Spec.Duration = &metav1.Duration{Duration: req.Duration}
	}
	log := logr.FromContextOrDiscard(ctx)
	err := b.client.Create(ctx, o)
	if apierrors.IsAlreadyExists(err) {
		// Made by a leader before this one; its status is written anew.
		err = b.client.Get(ctx, client.ObjectKeyFromObject(o), o)
		o.Status = st.records.order.Status
	}
	if err != nil {
		log.Error(err, "creating the ACME Order")
		return
	}
	st.records.order, st.records.created = o, true
	var earlier v1alpha1.OrderList
	if err := b.client.List(ctx, &earlier, client.InNamespace(o.Namespace), client.MatchingLabels{LabelOwner: string(req.Owner.UID)}); err != nil {
		log.Error(err, "listing earlier ACME Orders")
		return
	}
	for i := range earlier.Items {
		if e := &earlier.Items[i]; e.Name != o.Name {
			if err := b.client.Delete(ctx, e); client.IgnoreNotFound(err) != nil {
				log.Error(err, "deleting an earlier ACME Order")
			}
		}
	}
}

// createChallengeRecord makes the Challenge of an authorization, owned by
// its Order.
func (b *Backend) createChallengeRecord(ctx context.Context, st *orderState, authzURL, name, typ, url, target string) {
	o := st.records.order
	c := &v1alpha1.Challenge{Spec: v1alpha1.ChallengeSpec{DNSName: name, Type: typ, URL: url, Target: target, Order: o.Name}}
	rec := &challengeRecord{challenge: c}
	st.records.challenges[authzURL] = rec
	if !st.records.created {
		return
	}
	// Named by its name, not its authorization, so that an order made
	// anew (by another leader) finds the Challenge of the name again.
	sum := sha256.Sum256([]byte(name))
	c.ObjectMeta = metav1.ObjectMeta{
		Namespace: o.Namespace,
		Name:      o.Name + "-" + hex.EncodeToString(sum[:4]),
		Labels:    o.Labels,
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "Order", Name: o.Name, UID: o.UID,
		}},
	}
	err := b.client.Create(ctx, c)
	if apierrors.IsAlreadyExists(err) {
		status := c.Status
		err = b.client.Get(ctx, client.ObjectKeyFromObject(c), c)
		c.Status = status
	}
	if err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "creating the ACME Challenge")
		return
	}
	rec.created = true
}

// challengeState records what the Challenge of an authorization says.
func (b *Backend) challengeState(st *orderState, authzURL, state, reason, message string) {
	rec, ok := st.records.challenges[authzURL]
	if !ok {
		return
	}
	rec.challenge.Status = v1alpha1.ChallengeStatus{State: state, Reason: reason, Message: message}
}

// flushRecords writes the status of the Order and its Challenges where it
// changed since last written.
func (b *Backend) flushRecords(ctx context.Context, st *orderState) {
	log := logr.FromContextOrDiscard(ctx)
	for _, rec := range st.records.challenges {
		if !rec.created || equality.Semantic.DeepEqual(rec.written, rec.challenge.Status) {
			continue
		}
		if err := b.writeStatus(ctx, rec.challenge); err != nil {
			log.Error(err, "writing the status of an ACME Challenge")
			continue
		}
		rec.written = rec.challenge.Status
	}
	o := st.records.order
	if o == nil || !st.records.created || equality.Semantic.DeepEqual(st.records.written, o.Status) {
		return
	}
	if err := b.writeStatus(ctx, o); err != nil {
		log.Error(err, "writing the status of an ACME Order")
		return
	}
	st.records.written = o.Status
}

// writeStatus writes obj's status, as it stands, over the stored one: the
// controller is its only writer, but a leader before this one may have
// written since this one read, and what this one saw last is what counts.
func (b *Backend) writeStatus(ctx context.Context, obj client.Object) error {
	err := b.client.Status().Update(ctx, obj)
	if apierrors.IsConflict(err) {
		status := obj.DeepCopyObject().(client.Object)
		if err = b.client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err == nil {
			copyStatus(obj, status)
			err = b.client.Status().Update(ctx, obj)
		}
	}
	if apierrors.IsNotFound(err) {
		// Its request went, and the garbage collector took it.
		return nil
	}
	return err
}

// copyStatus sets the status of dst, an Order or a Challenge, to src's.
func copyStatus(dst, src client.Object) {
	switch d := dst.(type) {
	case *v1alpha1.Order:
		d.Status = src.(*v1alpha1.Order).Status
	case *v1alpha1.Challenge:
		d.Status = src.(*v1alpha1.Challenge).Status
	}
}

// observeLifetime records the lifetime of a certificate an issuer's ACME
// server issued, for the issuer's trust (see LongestLifetime).
func (b *Backend) observeLifetime(iss v1alpha1.GenericIssuer, leaf *x509.Certificate) {
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	key := issuer.RefFor(iss).String()
	b.mu.Lock()
	defer b.mu.Unlock()
	if lifetime > b.lifetimes[key] {
		b.lifetimes[key] = lifetime
	}
}

// longestLifetime is the longest lifetime of a certificate issued for iss
// that the controller has seen: since it started, and in the Orders still
// kept (a Certificate's latest, a CSI request's until it is cleaned up),
// which a controller that restarted sees too; zero when none.
func (b *Backend) longestLifetime(ctx context.Context, iss v1alpha1.GenericIssuer) (time.Duration, error) {
	b.mu.Lock()
	longest := b.lifetimes[issuer.RefFor(iss).String()]
	b.mu.Unlock()
	var orders v1alpha1.OrderList
	if err := b.client.List(ctx, &orders); err != nil {
		return 0, fmt.Errorf("listing ACME Orders: %w", err)
	}
	for _, o := range orders.Items {
		if o.Spec.IssuerName == iss.GetName() && o.Status.NotBefore != nil && o.Status.NotAfter != nil {
			longest = max(longest, o.Status.NotAfter.Sub(o.Status.NotBefore.Time))
		}
	}
	return longest, nil
}
