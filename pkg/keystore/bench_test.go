package keystore

import (
	"fmt"
	"testing"
)

// BenchmarkGenerate is the node-local cost of a new key, the largest part of
// a publish that does not wait on the API server.
func BenchmarkGenerate(b *testing.B) {
	for _, k := range []struct {
		alg  Algorithm
		size int
	}{
		{ECDSA, 256}, {ECDSA, 384}, {ECDSA, 521},
		{Ed25519, 0},
		{RSA, 2048}, {RSA, 3072},
	} {
		b.Run(fmt.Sprintf("%s-%d", k.alg, k.size), func(b *testing.B) {
			for b.Loop() {
				if _, err := Generate(k.alg, k.size); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
