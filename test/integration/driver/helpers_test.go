package driver_test

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// checkTrustBundle checks that the volume's ca.crt is the issuer's trust
// bundle (the signer's CA, which the signer never sends with the leaf), and
// returns it as a pool.
func checkTrustBundle(t testing.TB, dir string) *x509.CertPool {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if string(caPEM) != env.signer.TrustBundle() {
		t.Errorf("ca.crt =\n%s\nwant the issuer's trust bundle, the signer's CA", caPEM)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return roots
}

func checkGroup(t testing.TB, dir string, gid uint32, mode os.FileMode) {
	t.Helper()
	for _, name := range []string{"tls.crt", "tls.key", "ca.crt"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Gid != gid || fi.Mode().Perm() != mode {
			t.Errorf("%s: group %d mode %v, want group %d mode %v", name, st.Gid, fi.Mode().Perm(), gid, mode)
		}
	}
}
