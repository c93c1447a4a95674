package csi_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func checkGroup(t *testing.T, dir string, gid uint32, mode os.FileMode) {
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
