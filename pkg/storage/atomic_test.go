package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var now = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

func set(gen int, names ...string) map[string]File {
	files := map[string]File{}
	for _, n := range names {
		files[n] = File{Data: []byte(fmt.Sprintf("%s generation %d", n, gen)), Mode: 0o400}
	}
	return files
}

func TestWriteAtomicLaysOutFilesThroughTheDataLink(t *testing.T) {
	dir := t.TempDir()
	if err := WriteAtomic(dir, set(1, "tls.crt", "tls.key"), nil, now); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"tls.crt", "tls.key"} {
		link, err := os.Readlink(filepath.Join(dir, n))
		if err != nil || link != filepath.Join("..data", n) {
			t.Fatalf("%s links to %q (%v), want ..data/%s", n, link, err, n)
		}
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || string(data) != n+" generation 1" {
			t.Fatalf("%s = %q, %v", n, data, err)
		}
	}
	gen, _ := os.Readlink(filepath.Join(dir, "..data"))
	if want := "..2026_01_02_15_04_05."; len(gen) <= len(want) || gen[:len(want)] != want {
		t.Fatalf("generation directory %q is not named after the time", gen)
	}
}

func TestWriteAtomicReplacesTheWholeSetAndKeepsOnlyThePreviousGeneration(t *testing.T) {
	dir := t.TempDir()
	if err := WriteAtomic(dir, set(0, "tls.crt"), nil, now); err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(dir, set(1, "tls.crt", "tls.key", "keystore.p12"), nil, now); err != nil {
		t.Fatal(err)
	}
	previous, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteAtomic(dir, set(2, "tls.crt", "tls.key"), nil, now); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	// ..data, the current and the previous generation, two visible links.
	if len(names) != 5 {
		t.Fatalf("directory holds %v, want ..data, two generations and two links", names)
	}
	// A reader that resolved ..data just before the swap still reads its
	// whole set.
	if data, err := os.ReadFile(filepath.Join(dir, previous, "keystore.p12")); err != nil || string(data) != "keystore.p12 generation 1" {
		t.Fatalf("previous generation's keystore.p12 = %q, %v", data, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "keystore.p12")); !os.IsNotExist(err) {
		t.Fatal("file dropped from the set is still visible")
	}
	data, _ := os.ReadFile(filepath.Join(dir, "tls.key"))
	if string(data) != "tls.key generation 2" {
		t.Fatalf("tls.key = %q", data)
	}
}

func TestWriteAtomicSetsModeAndGroup(t *testing.T) {
	dir := t.TempDir()
	gid := int64(os.Getgid())
	files := map[string]File{"tls.key": {Data: []byte("k"), Mode: 0o440}, "tls.crt": {Data: []byte("c"), Mode: 0o400}}
	if err := WriteAtomic(dir, files, &gid, now); err != nil {
		t.Fatal(err)
	}
	for name, f := range files {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != f.Mode {
			t.Errorf("%s mode = %v, want %v", name, fi.Mode().Perm(), f.Mode)
		}
		if st := fi.Sys().(*syscall.Stat_t); int64(st.Gid) != gid {
			t.Errorf("%s group = %d, want %d", name, st.Gid, gid)
		}
	}
}

func TestWriteAtomicRejectsReservedNames(t *testing.T) {
	for _, name := range []string{"..data", "a/b", "."} {
		if err := WriteAtomic(t.TempDir(), map[string]File{name: {}}, nil, now); err == nil {
			t.Errorf("wrote file %q", name)
		}
	}
}

// A reader that resolves ..data once and reads every file from there gets a
// set from one generation. The generation a swap replaces is kept until the
// next swap, so a read that overlaps at most one swap always succeeds; one
// that spans two swaps may find its generation removed (ENOENT) and retry.
// No read ever gets files from two generations, or a file cut short.
func TestWriteAtomicReaderNeverSeesAMixedSet(t *testing.T) {
	dir := t.TempDir()
	names := []string{"tls.crt", "tls.key", "ca.crt"}
	if err := WriteAtomic(dir, set(0, names...), nil, now); err != nil {
		t.Fatal(err)
	}
	var (
		stop atomic.Bool
		// started counts swaps begun, done swaps returned: a read that
		// began after done reached n and ended before started passed n+1
		// overlapped at most one swap.
		started, done atomic.Int64
		wg            sync.WaitGroup
		complete      atomic.Int64
		problems      = make(chan string, 1)
	)
	report := func(format string, args ...any) {
		select {
		case problems <- fmt.Sprintf(format, args...):
		default:
		}
	}
	for range 2 {
		wg.Go(func() {
			for !stop.Load() {
				before := done.Load()
				gens, err := readSet(dir, names)
				switch spanned := started.Load() - before; {
				case errors.Is(err, os.ErrNotExist) && spanned >= 2:
					continue
				case err != nil:
					report("a read that overlapped %d swap(s) failed: %v", spanned, err)
					continue
				}
				complete.Add(1)
				for _, g := range gens[1:] {
					if g != gens[0] {
						report("reader saw generations %v in one set", gens)
					}
				}
			}
		})
	}
	var writeErr error
	for gen := 1; gen <= 300 && writeErr == nil; gen++ {
		started.Add(1)
		writeErr = WriteAtomic(dir, set(gen, names...), nil, now)
		done.Add(1)
	}
	stop.Store(true)
	wg.Wait()
	if writeErr != nil {
		t.Fatal(writeErr)
	}
	select {
	case p := <-problems:
		t.Fatal(p)
	default:
	}
	if complete.Load() == 0 {
		t.Fatal("readers never completed a read; the test proves nothing")
	}
}

// readSet reads names from the generation ..data points to and returns the
// generation number in each file.
func readSet(dir string, names []string) ([]int, error) {
	d, err := os.Open(filepath.Join(dir, "..data"))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	var gens []int
	for _, n := range names {
		fd, err := openAt(d, n)
		if err != nil {
			return nil, err
		}
		data, err := readAll(fd)
		if err != nil {
			return nil, err
		}
		i := bytes.LastIndexByte(data, ' ')
		g, err := strconv.Atoi(string(data[i+1:]))
		if err != nil {
			return nil, fmt.Errorf("%s is cut short: %q", n, data)
		}
		gens = append(gens, g)
	}
	return gens, nil
}

func openAt(dir *os.File, name string) (*os.File, error) {
	fd, err := syscall.Openat(int(dir.Fd()), name, syscall.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

func readAll(f *os.File) ([]byte, error) {
	defer f.Close()
	var buf bytes.Buffer
	_, err := buf.ReadFrom(f)
	return buf.Bytes(), err
}
