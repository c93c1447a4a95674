// Package keystore generates private keys and encodes key material in the
// formats a workload reads: PEM (PKCS#1 or PKCS#8), PKCS#12 and JKS.
//
// Keys are generated where this package runs (the node) and never leave it;
// nothing here talks to the network.
package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// Algorithm is a private key algorithm.
type Algorithm string

// The key algorithms the driver generates.
const (
	ECDSA   Algorithm = "ECDSA"
	RSA     Algorithm = "RSA"
	Ed25519 Algorithm = "Ed25519"
)

// Encoding is the PEM encoding of a private key.
type Encoding string

const (
	// PKCS8 works for every algorithm and is what most TLS stacks expect.
	PKCS8 Encoding = "PKCS8"
	// PKCS1 is RSA only; some older software reads nothing else.
	PKCS1 Encoding = "PKCS1"
)

// Key sizes accepted for each algorithm. RSA below 2048 bits is no longer
// safe; above 8192 bits generation takes minutes on a node.
const (
	DefaultECDSASize = 256
	DefaultRSASize   = 2048
	MinRSASize       = 2048
	MaxRSASize       = 8192
)

// ParseAlgorithm accepts the algorithm names users write in volume attributes.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch Algorithm(s) {
	case ECDSA, RSA, Ed25519:
		return Algorithm(s), nil
	}
	return "", fmt.Errorf("must be %q, %q or %q, not %q", ECDSA, RSA, Ed25519, s)
}

// ParseEncoding accepts the key encodings users write in volume attributes.
func ParseEncoding(s string) (Encoding, error) {
	switch Encoding(s) {
	case PKCS8, PKCS1:
		return Encoding(s), nil
	}
	return "", fmt.Errorf("must be %q or %q, not %q", PKCS8, PKCS1, s)
}

// DefaultSize is the size used for alg when none is given: 0 for Ed25519,
// which has no size.
func DefaultSize(alg Algorithm) int {
	switch alg {
	case ECDSA:
		return DefaultECDSASize
	case RSA:
		return DefaultRSASize
	}
	return 0
}

// CheckSize reports whether size (in bits) is valid for alg. Ed25519 keys
// have a fixed size, so only 0 is valid for them.
func CheckSize(alg Algorithm, size int) error {
	switch alg {
	case ECDSA:
		if _, err := curve(size); err != nil {
			return err
		}
		return nil
	case RSA:
		if size < MinRSASize || size > MaxRSASize || size%8 != 0 {
			return fmt.Errorf("RSA key size must be a multiple of 8 from %d to %d, not %d", MinRSASize, MaxRSASize, size)
		}
		return nil
	case Ed25519:
		if size != 0 {
			return errors.New("Ed25519 keys have a fixed size; remove the key size")
		}
		return nil
	}
	return fmt.Errorf("unknown key algorithm %q", alg)
}

// CheckEncoding reports whether enc can encode keys of alg.
func CheckEncoding(alg Algorithm, enc Encoding) error {
	if enc == PKCS1 && alg != RSA {
		return fmt.Errorf("PKCS1 encodes RSA keys only; use PKCS8 for %s keys", alg)
	}
	return nil
}

func curve(size int) (elliptic.Curve, error) {
	switch size {
	case 256:
		return elliptic.P256(), nil
	case 384:
		return elliptic.P384(), nil
	case 521:
		return elliptic.P521(), nil
	}
	return nil, fmt.Errorf("ECDSA key size must be 256, 384 or 521, not %d", size)
}

// Generate makes a new private key of alg and size bits, with randomness from
// crypto/rand.
func Generate(alg Algorithm, size int) (crypto.Signer, error) {
	if err := CheckSize(alg, size); err != nil {
		return nil, err
	}
	switch alg {
	case ECDSA:
		c, _ := curve(size)
		return ecdsa.GenerateKey(c, rand.Reader)
	case RSA:
		return rsa.GenerateKey(rand.Reader, size)
	default: // Ed25519; CheckSize rejected everything else.
		_, key, err := ed25519.GenerateKey(rand.Reader)
		return key, err
	}
}

// Describe returns alg and size of key, for checking a key read back from
// disk against what a volume asks for.
func Describe(key crypto.PublicKey) (Algorithm, int, error) {
	switch k := key.(type) {
	case *ecdsa.PublicKey:
		return ECDSA, k.Curve.Params().BitSize, nil
	case *rsa.PublicKey:
		return RSA, k.N.BitLen(), nil
	case ed25519.PublicKey:
		return Ed25519, 0, nil
	}
	return "", 0, fmt.Errorf("unsupported public key type %T", key)
}

// PEM block types of encoded private keys.
const (
	pemTypePKCS8 = "PRIVATE KEY"
	pemTypePKCS1 = "RSA PRIVATE KEY"
)

// EncodePrivateKey returns key as a PEM block in enc.
func EncodePrivateKey(key crypto.Signer, enc Encoding) ([]byte, error) {
	switch enc {
	case PKCS1:
		k, ok := key.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("PKCS1 encodes RSA keys only, not %T", key)
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemTypePKCS1, Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	case PKCS8:
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encoding private key as PKCS8: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemTypePKCS8, Bytes: der}), nil
	}
	return nil, fmt.Errorf("unknown key encoding %q", enc)
}
