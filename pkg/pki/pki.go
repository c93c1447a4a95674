// Package pki holds the X.509 and PEM rules both binaries share: how a
// certificate list, a private key and a certificate request are read from
// PEM, how public keys are compared, and how a certificate request asks for a
// CA. Each is defined once because each is a security contract: the signer
// and the node must read the same bytes the same way.
//
// It knows nothing of Kubernetes or of certmint's resources.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
)

// PEM block types.
const (
	BlockCertificate        = "CERTIFICATE"
	BlockCertificateRequest = "CERTIFICATE REQUEST"
	BlockPKCS8PrivateKey    = "PRIVATE KEY"
	BlockPKCS1PrivateKey    = "RSA PRIVATE KEY"
	BlockSEC1PrivateKey     = "EC PRIVATE KEY"
)

// CertificateDERs reads the DER of each certificate of a PEM list, in
// order, without parsing them, for callers that compare or parse only some.
// Every PEM block must be a certificate: a list that holds something else
// (a key pasted into a chain, say) is refused rather than read in part, so
// that no two readers take different certificates from the same bytes. A
// list without a certificate is an error too. Text between blocks is
// ignored, as PEM allows.
func CertificateDERs(data []byte) ([][]byte, error) {
	var ders [][]byte
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != BlockCertificate {
			return nil, fmt.Errorf("PEM block %q, number %d, is not a certificate", block.Type, len(ders)+1)
		}
		ders = append(ders, block.Bytes)
	}
	if len(ders) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return ders, nil
}

// ParseCertificates reads the certificates of a PEM list, in order: a
// chain, a CA Secret's tls.crt, a trust bundle. The list is read as
// CertificateDERs reads it, and every certificate must parse.
func ParseCertificates(data []byte) ([]*x509.Certificate, error) {
	ders, err := CertificateDERs(data)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		if certs[i], err = x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
	}
	return certs, nil
}

// EncodeCertificates writes certs as a PEM list, in order.
func EncodeCertificates(certs ...*x509.Certificate) []byte {
	var out bytes.Buffer
	for _, c := range certs {
		_ = pem.Encode(&out, &pem.Block{Type: BlockCertificate, Bytes: c.Raw})
	}
	return out.Bytes()
}

// ParsePrivateKey reads the first private key of PEM data: PKCS#8, PKCS#1
// (RSA) or SEC 1 (EC). Blocks of other types before it (EC PARAMETERS, a
// certificate) are skipped. Only keys that can sign are returned.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return nil, errors.New("no PEM private key found")
		}
		var key any
		var err error
		switch block.Type {
		case BlockPKCS8PrivateKey:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case BlockPKCS1PrivateKey:
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case BlockSEC1PrivateKey:
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
}

// PublicKeysEqual reports whether a and b are the same key of a type
// certmint issues for (ECDSA, RSA, Ed25519).
func PublicKeysEqual(a, b crypto.PublicKey) bool {
	switch k := a.(type) {
	case *ecdsa.PublicKey:
		return k.Equal(b)
	case *rsa.PublicKey:
		return k.Equal(b)
	case ed25519.PublicKey:
		return k.Equal(b)
	}
	return false
}

// IsSelfSigned reports whether c is issued by itself: a root.
func IsSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// ParseCertificateRequest reads a PEM certificate request and checks its
// signature, which proves the requester holds the key.
func ParseCertificateRequest(data []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != BlockCertificateRequest {
		return nil, errors.New("not a PEM certificate request")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("the request's signature: %w", err)
	}
	return req, nil
}

// EncodeCertificateRequest writes a DER certificate request as PEM.
func EncodeCertificateRequest(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: BlockCertificateRequest, Bytes: der})
}

var oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}

// CARequestExtension is how a certificate request asks for a CA
// certificate: a critical basicConstraints extension with CA set.
func CARequestExtension() pkix.Extension {
	// Marshalling a constant structure cannot fail.
	value, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	return pkix.Extension{Id: oidBasicConstraints, Critical: true, Value: value}
}

// RequestsCA reports whether req asks for a CA certificate: a
// basicConstraints extension with CA set, or one that does not parse, which
// counts as the worst case.
func RequestsCA(req *x509.CertificateRequest) bool {
	for _, ext := range req.Extensions {
		if !ext.Id.Equal(oidBasicConstraints) {
			continue
		}
		var bc struct {
			IsCA bool `asn1:"optional"`
		}
		if _, err := asn1.Unmarshal(ext.Value, &bc); err != nil || bc.IsCA {
			return true
		}
	}
	return false
}
