package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// files prints each regular file of a directory (following symlinks, as the
// application does) with its mode, owner and group, one per line:
// "tls.crt 0440 0 2000". Entries starting with ".." are the volume's
// generation directories and are skipped.
func files(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("files", flag.ContinueOnError)
	dir := fs.String("dir", "/tls", "directory to list")
	if err := fs.Parse(args); err != nil {
		return err
	}
	entries, err := os.ReadDir(*dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		fi, err := os.Stat(filepath.Join(*dir, e.Name()))
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner information", e.Name())
		}
		fmt.Printf("%s %04o %d %d\n", e.Name(), fi.Mode().Perm(), st.Uid, st.Gid)
	}
	return nil
}

// cat copies a file to standard output, so tests can take files out of a
// container that has no shell or tar.
func cat(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("cat", flag.ContinueOnError)
	file := fs.String("file", "", "file to copy to standard output (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("--file is required")
	}
	f, err := os.Open(*file)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(os.Stdout, f)
	return err
}
