package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/logkeys"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
)

// Resume takes over the volumes an earlier run of the driver published, as
// their state files record them. Renewal schedules live in memory, so those
// still mounted are scheduled again; a mount lost while the volume's files
// remain is made again. The kubelet calls NodeUnpublishVolume only while the
// driver runs, so a volume whose pod went away in the meantime is removed
// here, or never.
//
// A publish cut short by the driver's end left no state file (that is saved
// last), maybe a tmpfs: the tmpfs is removed here, and the kubelet, which saw
// the call fail, publishes the volume again from the start. A renewal cut
// short left the old files or the new ones, whole: the volume is scheduled
// from its state, and renewed again at worst.
//
// Call it before serving CSI calls. Only failing to list the state files is
// an error: a volume that cannot be resumed is logged and left as it is.
func (m *Manager) Resume(ctx context.Context) error {
	ids, err := m.store.ListVolumes()
	if err != nil {
		return err
	}
	for _, id := range ids {
		m.resume(ctx, id)
	}
	dirs, err := m.store.ListVolumeDirs()
	if err != nil {
		return err
	}
	for _, id := range dirs {
		if slices.Contains(ids, id) {
			continue
		}
		if err := m.store.RemoveVolume(id); err != nil {
			m.log.Error(err, "Removing the files of a publish cut short", logkeys.VolumeID, id)
			continue
		}
		m.log.Info("Removed the files of a publish cut short; the kubelet publishes the volume again", logkeys.VolumeID, id)
	}
	return nil
}

func (m *Manager) resume(ctx context.Context, volumeID string) {
	log := m.log.WithValues(logkeys.VolumeID, volumeID)
	st, err := m.store.LoadState(volumeID)
	if err == nil && (st.VolumeID != volumeID || st.TargetPath == "") {
		err = errors.New("the state names another volume or no target path")
	}
	if err != nil {
		log.Error(err, "Skipping a volume whose state cannot be read")
		m.strand(volumeID, st, err)
		return
	}
	log = log.WithValues(logkeys.TargetPath, st.TargetPath)
	published, err := m.store.IsMounted(st.TargetPath)
	if err != nil {
		log.Error(err, "Skipping a volume whose target path cannot be checked")
		return
	}
	if !published && !exists(podDir(st.TargetPath, st.Attributes[attributes.PodUIDKey])) {
		if err := m.Unpublish(ctx, volumeID, st.TargetPath); err != nil {
			log.Error(err, "Removing a volume whose pod is gone")
			return
		}
		log.Info("Removed a volume whose pod is gone")
		return
	}

	spec, err := attributes.Parse(st.Attributes)
	if err != nil {
		log.Error(err, "Skipping a volume whose stored attributes are not valid")
		m.strand(volumeID, st, err)
		return
	}
	log = log.WithValues(logkeys.PodNamespace, spec.Pod.Namespace, logkeys.PodName, spec.Pod.Name, logkeys.Issuer, spec.Certificate.Issuer.String())
	if !published {
		// Without its files (the node restarted and took the tmpfs with it)
		// the volume cannot be mounted, nor renewed: a renewal would write
		// keys to whatever disk is under the volume's directory. The
		// kubelet publishes it again, or unpublishes it.
		if _, err := m.store.ReadFile(volumeID, spec.Volume.Files.Certificate); err != nil {
			log.Error(err, "Volume is not mounted and its files cannot be read; leaving it to the kubelet")
			return
		}
		if !exists(st.TargetPath) {
			log.Info("Volume's target path is gone while its pod directory exists; leaving it to the kubelet")
			return
		}
		if err := m.store.Mount(volumeID, st.TargetPath); err != nil {
			log.Error(err, "Mounting again a volume whose mount was lost")
			return
		}
		log.Info("Mounted again a volume whose mount was lost")
	}
	m.track(volumeID, spec)
	m.record(st, spec, m.currentLeaf(volumeID, spec))
	if m.renewals != nil {
		m.renewals.Schedule(volumeID, m.renewalOf(st, spec))
	}
	log.V(1).Info("Volume resumed", logkeys.NotAfter, st.NotAfter)
}

// podDir is the directory whose existence shows the kubelet still has the
// volume's pod: the target path's ancestor named after the pod UID (the
// kubelet's pods/<uid>/volumes/... layout), else the target's parent, the
// volume directory the kubelet creates for the driver to mount in.
func podDir(target, podUID string) string {
	parent := filepath.Dir(target)
	if podUID != "" {
		for dir := parent; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
			if filepath.Base(dir) == podUID {
				return dir
			}
		}
	}
	return parent
}

// exists reports whether path exists. Anything but a clear "does not exist"
// counts as existing: a volume is never removed on a guess.
func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

// Reasons of the events on pods.
const (
	ReasonVolumeStranded = "CertificateVolumeStranded"
)

// strand records that the driver cannot renew volumeID: its state, st if
// any of it could be read, failed with err. Its files stay as they are,
// still mounted, until the certificate expires, so the operator must hear
// of it before then: the pod gets an Event when the state still names it,
// and the volume is counted in a metric and named in Problems.
func (m *Manager) strand(volumeID string, st *storage.State, err error) {
	m.mu.Lock()
	m.stranded[volumeID] = err.Error()
	n := len(m.stranded)
	m.mu.Unlock()
	m.metrics.setStranded(n)
	m.recordStranded(volumeID, st, err.Error())
	if st == nil || m.events == nil {
		return
	}
	pod := attributes.Pod{
		Name:      st.Attributes[attributes.PodNameKey],
		Namespace: st.Attributes[attributes.PodNamespaceKey],
		UID:       st.Attributes[attributes.PodUIDKey],
	}
	if request.ValidatePodReference(pod.Namespace, pod.Name, pod.UID) != nil {
		return
	}
	notAfter := "an unknown time"
	if !st.NotAfter.IsZero() {
		notAfter = st.NotAfter.UTC().Format(time.RFC3339)
	}
	m.eventOn(pod, corev1.EventTypeWarning, ReasonVolumeStranded,
		"The certmint driver cannot read the state of volume %s, so it will not renew its certificate (valid until %s): %v. Recreate the pod to get a new volume.",
		volumeID, notAfter, err)
}

// unstrand forgets volumeID once it is gone.
func (m *Manager) unstrand(volumeID string) {
	m.mu.Lock()
	_, ok := m.stranded[volumeID]
	delete(m.stranded, volumeID)
	n := len(m.stranded)
	m.mu.Unlock()
	if ok {
		m.metrics.setStranded(n)
	}
}

// Problems describes what the driver cannot do for the volumes it serves:
// the volumes it cannot renew. Empty when there is nothing to fix.
func (m *Manager) Problems() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.stranded))
	for id, reason := range m.stranded {
		out = append(out, fmt.Sprintf("volume %s is not renewed: its state cannot be read: %s", id, reason))
	}
	slices.Sort(out)
	return out
}
