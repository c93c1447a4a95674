package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/certmint/certmint/pkg/keystore"
)

// keyResult is the cost of one kind of key.
type keyResult struct {
	name  string
	perOp time.Duration
	runs  int
}

// benchmarkKeys times keystore.Generate, the node-local work of a publish
// that does not wait for the API server, for every algorithm the volume
// attributes offer.
func benchmarkKeys() []keyResult {
	var out []keyResult
	for _, k := range []struct {
		alg  keystore.Algorithm
		size int
	}{
		{keystore.ECDSA, 256}, {keystore.ECDSA, 384}, {keystore.ECDSA, 521},
		{keystore.Ed25519, 0},
		{keystore.RSA, 2048}, {keystore.RSA, 3072},
	} {
		var failed error
		r := testing.Benchmark(func(b *testing.B) {
			for b.Loop() {
				if _, err := keystore.Generate(k.alg, k.size); err != nil {
					failed = err
					return
				}
			}
		})
		name := string(k.alg)
		if k.size != 0 {
			name = fmt.Sprintf("%s %d", k.alg, k.size)
		}
		if failed != nil {
			logf("generating %s keys: %v", name, failed)
			continue
		}
		out = append(out, keyResult{name: name, perOp: time.Duration(r.NsPerOp()), runs: r.N})
	}
	return out
}
