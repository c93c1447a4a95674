package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File is one file of a set written together.
type File struct {
	Data []byte
	// Mode is the file's permission bits.
	Mode os.FileMode
}

// dataLink is the symlink naming the current generation directory. The
// visible files are symlinks through it, so swapping it swaps every file at
// once. Names starting with ".." are reserved for the writer.
const (
	dataLink    = "..data"
	dataLinkTmp = "..data_tmp"
	genPrefix   = ".."
)

// WriteAtomic replaces the file set in dir with files, so that a reader sees
// either the old set or the new one, never a mix.
//
// Layout (the same as the kubelet uses for Secret volumes, so applications
// that watch those handle it):
//
//	dir/..2026_01_02_15_04_05.123456789/tls.crt   one directory per generation
//	dir/..data -> ..2026_01_02_15_04_05.123456789 swapped by rename(2)
//	dir/tls.crt -> ..data/tls.crt                  stable
//
// A reader that needs several files consistent resolves ..data once and
// reads all files from that directory; a generation directory is never
// changed after the swap. The generation just replaced is kept until the
// next swap, so a reader that resolved ..data a moment before a swap still
// finds every file; only generations two or more swaps old are removed.
//
// Files are owned by the writer's user and, if gid is not nil, by group gid.
// now names the new generation directory.
func WriteAtomic(dir string, files map[string]File, gid *int64, now time.Time) error {
	for name := range files {
		if name != filepath.Base(name) || strings.HasPrefix(name, genPrefix) || name == "." {
			return fmt.Errorf("invalid file name %q", name)
		}
	}
	gen, err := os.MkdirTemp(dir, genPrefix+now.UTC().Format("2006_01_02_15_04_05."))
	if err != nil {
		return fmt.Errorf("creating generation directory: %w", err)
	}
	if err := writeGeneration(gen, files, gid); err != nil {
		return errors.Join(err, os.RemoveAll(gen))
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))

	tmp := filepath.Join(dir, dataLinkTmp)
	if err := os.Remove(tmp); err != nil && !os.IsNotExist(err) {
		return errors.Join(fmt.Errorf("removing stale %s: %w", dataLinkTmp, err), os.RemoveAll(gen))
	}
	if err := os.Symlink(filepath.Base(gen), tmp); err != nil {
		return errors.Join(fmt.Errorf("linking new generation: %w", err), os.RemoveAll(gen))
	}
	if err := os.Rename(tmp, filepath.Join(dir, dataLink)); err != nil {
		return errors.Join(fmt.Errorf("swapping to new generation: %w", err), os.RemoveAll(gen))
	}
	// From here on the new set is live; what follows only tidies up.
	if err := linkVisible(dir, files); err != nil {
		return err
	}
	return removeGenerations(dir, filepath.Base(gen), old)
}

// removeGenerations removes the generation directories in dir other than
// keep.
func removeGenerations(dir string, keep ...string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		// ..data and ..data_tmp are symlinks; generations are directories.
		if !e.IsDir() || !strings.HasPrefix(e.Name(), genPrefix) || slices.Contains(keep, e.Name()) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("removing an old generation: %w", err)
		}
	}
	return nil
}

func writeGeneration(gen string, files map[string]File, gid *int64) error {
	// MkdirTemp creates 0700; the pod's user must be able to traverse it.
	if err := os.Chmod(gen, 0o755); err != nil {
		return err
	}
	for name, f := range files {
		path := filepath.Join(gen, name)
		// The file starts with no permissions so nobody can open it while
		// it is being written or before its group is set.
		fd, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0)
		if err != nil {
			return fmt.Errorf("creating %s: %w", name, err)
		}
		_, werr := fd.Write(f.Data)
		if gid != nil && werr == nil {
			werr = fd.Chown(-1, int(*gid))
		}
		if werr == nil {
			werr = fd.Chmod(f.Mode)
		}
		if err := errors.Join(werr, fd.Close()); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	return nil
}

// linkVisible makes dir/<name> -> ..data/<name> for every file in the set
// and removes visible links of files the set no longer has.
func linkVisible(dir string, files map[string]File) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, genPrefix) {
			continue
		}
		if _, keep := files[name]; !keep {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("removing stale %s: %w", name, err)
			}
		}
	}
	for name := range files {
		target := filepath.Join(dataLink, name)
		link := filepath.Join(dir, name)
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return fmt.Errorf("linking %s: %w", name, err)
		}
	}
	return nil
}

// ReadCurrent reads the named file of the live generation in dir.
func ReadCurrent(dir, name string) ([]byte, error) {
	return os.ReadFile(filepath.Join(dir, dataLink, name))
}
