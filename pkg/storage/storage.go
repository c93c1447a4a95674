// Package storage keeps the node's side of volumes: a tmpfs directory per
// volume holding its files, the bind mount into the pod's target path, and a
// state file per volume so a restarted driver knows what it serves.
//
// It knows nothing of certificates or gRPC. Key material is only ever
// written into a volume's tmpfs directory; state files never hold a key or a
// ServiceAccount token.
package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/mount-utils"
	"k8s.io/utils/clock"
)

// DefaultTmpfsSize caps each volume's tmpfs. A chain, a key and two
// keystores fit in a few tens of kilobytes; the cap only stops a runaway.
const DefaultTmpfsSize = "4m"

// Options configure a Store.
type Options struct {
	// DataRoot holds one directory per volume, each a tmpfs mount. Required.
	DataRoot string
	// StateDir holds one state file per volume. Required; it should
	// survive a driver restart (a hostPath), unlike DataRoot's contents.
	StateDir string
	// Mounter mounts tmpfs and bind mounts. Required.
	Mounter mount.Interface
	// Clock names file generations; zero means the real clock.
	Clock clock.PassiveClock
	// TmpfsSize is the size= option of each volume's tmpfs; empty means
	// DefaultTmpfsSize.
	TmpfsSize string
}

// Store is the node's volume storage.
type Store struct {
	dataRoot  string
	stateDir  string
	mounter   mount.Interface
	clock     clock.PassiveClock
	tmpfsSize string
}

// New returns a Store, creating its directories.
func New(opts Options) (*Store, error) {
	switch {
	case opts.DataRoot == "":
		return nil, errors.New("storage: DataRoot is required")
	case opts.StateDir == "":
		return nil, errors.New("storage: StateDir is required")
	case opts.Mounter == nil:
		return nil, errors.New("storage: Mounter is required")
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.TmpfsSize == "" {
		opts.TmpfsSize = DefaultTmpfsSize
	}
	for _, dir := range []string{opts.DataRoot, opts.StateDir} {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("storage: creating %s: %w", dir, err)
		}
	}
	return &Store{dataRoot: opts.DataRoot, stateDir: opts.StateDir, mounter: opts.Mounter, clock: opts.Clock, tmpfsSize: opts.TmpfsSize}, nil
}

// CheckVolumeID rejects IDs that cannot safely name a directory. The kubelet
// makes ephemeral volume IDs like "csi-<sha256>", but the ID comes over a
// socket, so it is checked before it becomes a path.
func CheckVolumeID(id string) error {
	switch {
	case id == "":
		return errors.New("volume ID is empty")
	case len(id) > 128:
		return errors.New("volume ID is longer than 128 characters")
	case id == "." || id == ".." || strings.ContainsAny(id, "/\x00"):
		return fmt.Errorf("volume ID %q is not a single path component", id)
	}
	return nil
}

// VolumeDir is the directory holding a volume's files.
func (s *Store) VolumeDir(volumeID string) string {
	return filepath.Join(s.dataRoot, volumeID)
}

// PrepareVolume creates the volume's directory and mounts a tmpfs on it, so
// its keys never touch a disk. Calling it again for a prepared volume is a
// no-op.
func (s *Store) PrepareVolume(volumeID string) error {
	if err := CheckVolumeID(volumeID); err != nil {
		return err
	}
	dir := s.VolumeDir(volumeID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating volume directory: %w", err)
	}
	notMnt, err := s.mounter.IsLikelyNotMountPoint(dir)
	if err != nil {
		return fmt.Errorf("checking volume directory: %w", err)
	}
	if !notMnt {
		return nil
	}
	opts := []string{"size=" + s.tmpfsSize, "mode=0755", "nosuid", "nodev", "noexec"}
	if err := s.mounter.Mount("tmpfs", dir, "tmpfs", opts); err != nil {
		return fmt.Errorf("mounting tmpfs on volume directory: %w", err)
	}
	return nil
}

// WriteFiles atomically replaces the volume's file set; see WriteAtomic.
func (s *Store) WriteFiles(volumeID string, files map[string]File, gid *int64) error {
	if err := CheckVolumeID(volumeID); err != nil {
		return err
	}
	return WriteAtomic(s.VolumeDir(volumeID), files, gid, s.clock.Now())
}

// ReadFile reads a file of the volume's current set; os.ErrNotExist if the
// volume has no such file yet.
func (s *Store) ReadFile(volumeID, name string) ([]byte, error) {
	if err := CheckVolumeID(volumeID); err != nil {
		return nil, err
	}
	return ReadCurrent(s.VolumeDir(volumeID), name)
}

// Mount bind-mounts the volume's directory read-only at target. A target
// that is already a mount point is taken as mounted: the kubelet retries
// NodePublishVolume after timeouts, and the mount is ours.
func (s *Store) Mount(volumeID, target string) error {
	if err := CheckVolumeID(volumeID); err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return fmt.Errorf("creating target path: %w", err)
	}
	notMnt, err := s.mounter.IsLikelyNotMountPoint(target)
	if err != nil {
		return fmt.Errorf("checking target path: %w", err)
	}
	if !notMnt {
		return nil
	}
	if err := s.mounter.Mount(s.VolumeDir(volumeID), target, "", []string{"bind", "ro", "nosuid", "nodev", "noexec"}); err != nil {
		return fmt.Errorf("bind-mounting volume at target path: %w", err)
	}
	return nil
}

// IsMounted reports whether target is a mount point.
func (s *Store) IsMounted(target string) (bool, error) {
	notMnt, err := s.mounter.IsLikelyNotMountPoint(target)
	if os.IsNotExist(err) {
		return false, nil
	}
	return !notMnt, err
}

// Unmount unmounts target and removes it. A target that does not exist or
// is not mounted is not an error.
func (s *Store) Unmount(target string) error {
	if err := mount.CleanupMountPoint(target, s.mounter, false); err != nil {
		return fmt.Errorf("unmounting target path: %w", err)
	}
	return nil
}

// RemoveVolume unmounts the volume's tmpfs, deletes its directory and its
// state file. Removing a volume that is already gone is not an error.
func (s *Store) RemoveVolume(volumeID string) error {
	if err := CheckVolumeID(volumeID); err != nil {
		return err
	}
	dir := s.VolumeDir(volumeID)
	for {
		notMnt, err := s.mounter.IsLikelyNotMountPoint(dir)
		if os.IsNotExist(err) {
			break
		}
		if err != nil {
			return fmt.Errorf("checking volume directory: %w", err)
		}
		if notMnt {
			// Only once nothing is mounted here: RemoveAll must not reach
			// through a mount.
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("removing volume directory: %w", err)
			}
			break
		}
		if err := s.mounter.Unmount(dir); err != nil {
			return fmt.Errorf("unmounting volume tmpfs: %w", err)
		}
	}
	if err := os.Remove(s.statePath(volumeID)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("removing volume state: %w", err)
	}
	return nil
}

// State is what the driver remembers of a volume across restarts. It must
// never hold a private key or a ServiceAccount token.
type State struct {
	VolumeID   string `json:"volumeID"`
	TargetPath string `json:"targetPath"`
	// Attributes is the volume context without the kubelet's tokens.
	Attributes map[string]string `json:"attributes"`
	// MountGroup is the pod's fsGroup as the kubelet passed it, if any.
	MountGroup string `json:"mountGroup,omitempty"`
	// NotBefore and NotAfter bound the current certificate; RenewAt is
	// when it should be replaced.
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	RenewAt   time.Time `json:"renewAt"`
	// RequestCreated is the creationTimestamp of the request the current
	// certificate was issued for, on the API server's clock; an issuer's
	// status.reissueBefore is compared with it. Zero in states written
	// before it was recorded.
	RequestCreated time.Time `json:"requestCreated,omitzero"`
}

func (s *Store) statePath(volumeID string) string {
	return filepath.Join(s.stateDir, volumeID+".json")
}

// SaveState writes st atomically (temp file and rename), readable by root
// only since the attributes may hold keystore passwords.
func (s *Store) SaveState(st *State) error {
	if err := CheckVolumeID(st.VolumeID); err != nil {
		return err
	}
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(s.stateDir, ".tmp-"+st.VolumeID+"-")
	if err != nil {
		return fmt.Errorf("saving volume state: %w", err)
	}
	// No fsync: the state only matters while the volume's tmpfs exists,
	// and a crash that could lose the file loses the tmpfs with it.
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("saving volume state: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.statePath(st.VolumeID)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("saving volume state: %w", err)
	}
	return nil
}

// ListVolumes returns the IDs of the volumes that have a state file, in no
// particular order. A state file left half-written by a crash is a temp
// file, never listed.
func (s *Store) ListVolumes() ([]string, error) {
	entries, err := os.ReadDir(s.stateDir)
	if err != nil {
		return nil, fmt.Errorf("listing volume states: %w", err)
	}
	var ids []string
	for _, e := range entries {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() || CheckVolumeID(id) != nil || strings.HasPrefix(id, ".") {
			continue
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// ListVolumeDirs returns the IDs of the volumes that have a directory under
// the data root, with or without a state file, in no particular order.
func (s *Store) ListVolumeDirs() ([]string, error) {
	entries, err := os.ReadDir(s.dataRoot)
	if err != nil {
		return nil, fmt.Errorf("listing volume directories: %w", err)
	}
	var ids []string
	for _, e := range entries {
		if e.IsDir() && CheckVolumeID(e.Name()) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// LoadState reads a volume's state; an error wrapping os.ErrNotExist if the
// volume is unknown.
func (s *Store) LoadState(volumeID string) (*State, error) {
	if err := CheckVolumeID(volumeID); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(s.statePath(volumeID))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("reading state of volume %s: %w", volumeID, err)
	}
	return &st, nil
}
