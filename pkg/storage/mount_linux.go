package storage

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// SyscallMounter mounts and unmounts with mount(2) and umount(2) instead of
// running mount(8): a publish mounts three times (tmpfs, bind, read-only
// remount), and a fork and exec each costs milliseconds on a busy node,
// which is most of a publish. Everything else (mount point checks, listing)
// is the mount-utils mounter's.
type SyscallMounter struct {
	mount.Interface
}

var _ mount.Interface = (*SyscallMounter)(nil)

// NewMounter returns the mounter the driver uses on a real node.
func NewMounter() *SyscallMounter {
	return &SyscallMounter{Interface: mount.New("")}
}

// mountFlags are the options that are flags to mount(2); the rest are
// passed to the file system as data.
var mountFlags = map[string]uintptr{
	"bind":   unix.MS_BIND,
	"ro":     unix.MS_RDONLY,
	"nosuid": unix.MS_NOSUID,
	"nodev":  unix.MS_NODEV,
	"noexec": unix.MS_NOEXEC,
}

// Mount supports what storage mounts: file systems with flags and data
// options, and bind mounts, which mount(2) makes read-only only on a
// remount.
func (m *SyscallMounter) Mount(source, target, fstype string, options []string) error {
	var flags uintptr
	var data []string
	for _, o := range options {
		if f, ok := mountFlags[o]; ok {
			flags |= f
		} else {
			data = append(data, o)
		}
	}
	if flags&unix.MS_BIND == 0 {
		if err := unix.Mount(source, target, fstype, flags, strings.Join(data, ",")); err != nil {
			return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
		}
		return nil
	}
	if len(data) > 0 {
		return fmt.Errorf("bind mount of %s: unsupported options %v", source, data)
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind mount %s on %s: %w", source, target, err)
	}
	if rest := flags &^ unix.MS_BIND; rest != 0 {
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|rest, ""); err != nil {
			return fmt.Errorf("remounting %s with %v: %w", target, options, err)
		}
	}
	return nil
}

// Unmount unmounts target.
func (m *SyscallMounter) Unmount(target string) error {
	if err := unix.Unmount(target, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}
