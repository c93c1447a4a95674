// Package csi serves the CSI Identity and Node services of the certmint
// driver. It validates CSI requests, hands volumes to a Publisher and maps
// the outcome to gRPC status codes; it knows nothing of certificates.
package csi

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/certmint/certmint/pkg/attributes"
	"github.com/certmint/certmint/pkg/manager"
	"github.com/certmint/certmint/pkg/request"
	"github.com/certmint/certmint/pkg/storage"
	"github.com/certmint/certmint/pkg/trust"
)

// Publisher does the work behind NodePublishVolume and NodeUnpublishVolume.
type Publisher interface {
	Publish(ctx context.Context, req manager.PublishRequest) error
	Unpublish(ctx context.Context, volumeID, targetPath string) error
}

var _ Publisher = (*manager.Manager)(nil)

// Options configure a Driver.
type Options struct {
	// NodeID is the node's name, returned by NodeGetInfo. Required.
	NodeID string
	// Publisher publishes volumes. Required.
	Publisher Publisher
	// Version is reported by GetPluginInfo.
	Version string
	// Ready reports whether the driver can serve volumes now, for Probe;
	// nil means always.
	Ready func() bool
}

// Driver implements the CSI Identity and Node services. Every other CSI
// call answers Unimplemented.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	nodeID    string
	publisher Publisher
	version   string
	ready     func() bool
}

var (
	_ csi.IdentityServer = (*Driver)(nil)
	_ csi.NodeServer     = (*Driver)(nil)
)

// NewDriver returns a Driver.
func NewDriver(opts Options) (*Driver, error) {
	switch {
	case opts.NodeID == "":
		return nil, errors.New("csi: NodeID is required")
	case opts.Publisher == nil:
		return nil, errors.New("csi: Publisher is required")
	}
	if opts.Ready == nil {
		opts.Ready = func() bool { return true }
	}
	return &Driver{nodeID: opts.NodeID, publisher: opts.Publisher, version: opts.Version, ready: opts.Ready}, nil
}

// GetPluginInfo names the driver and its version.
func (d *Driver) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: request.DriverName, VendorVersion: d.version}, nil
}

// GetPluginCapabilities reports no capabilities: there is no Controller
// service, volumes are inline and exist only on their node.
func (d *Driver) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{}, nil
}

// Probe reports whether the driver can serve volumes now.
func (d *Driver) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(d.ready())}, nil
}

// NodeGetInfo names the node; there is no limit of volumes.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.nodeID}, nil
}

// NodeGetCapabilities advertises VOLUME_MOUNT_GROUP: with it the kubelet
// passes the pod's fsGroup in NodePublishVolume instead of changing file
// ownership itself (which it would skip anyway for a read-only volume).
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{Capabilities: []*csi.NodeServiceCapability{{
		Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP}},
	}}}, nil
}

// NodePublishVolume checks the request, then has the publisher issue the
// volume's certificate and mount its files at the target path.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	mountGroup, err := validatePublish(req)
	if err != nil {
		return nil, err
	}
	err = d.publisher.Publish(ctx, manager.PublishRequest{
		VolumeID:   req.GetVolumeId(),
		TargetPath: req.GetTargetPath(),
		Attributes: req.GetVolumeContext(),
		MountGroup: mountGroup,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

// validatePublish checks everything about a publish request that is not a
// volume attribute, and returns the pod's fsGroup if the kubelet passed one.
// Messages say what to change in the pod spec where the user can fix it.
func validatePublish(req *csi.NodePublishVolumeRequest) (*int64, error) {
	capability := req.GetVolumeCapability()
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case req.GetTargetPath() == "":
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	case capability == nil:
		return nil, status.Error(codes.InvalidArgument, "volume_capability is required")
	case capability.GetMount() == nil:
		return nil, status.Error(codes.InvalidArgument, "certmint volumes are file systems: the volume must be mounted, not used as a block device")
	case req.GetVolumeContext()[attributes.EphemeralKey] != "true":
		return nil, status.Errorf(codes.InvalidArgument,
			"only inline ephemeral volumes are supported: declare the %s volume under the pod's spec.volumes[].csi, not through a PersistentVolume", request.DriverName)
	case !req.GetReadonly():
		return nil, status.Error(codes.InvalidArgument, "set readOnly: true in the pod's spec.volumes[].csi: certmint volumes are read-only")
	}
	if err := storage.CheckVolumeID(req.GetVolumeId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	group := capability.GetMount().GetVolumeMountGroup()
	if group == "" {
		return nil, nil
	}
	gid, err := strconv.ParseInt(group, 10, 64)
	if err != nil || gid < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "volume_mount_group %q is not a group ID", group)
	}
	return &gid, nil
}

// NodeUnpublishVolume has the publisher unmount and remove the volume;
// a volume already gone is no error.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	switch {
	case req.GetVolumeId() == "":
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	case req.GetTargetPath() == "":
		return nil, status.Error(codes.InvalidArgument, "target_path is required")
	}
	if err := storage.CheckVolumeID(req.GetVolumeId()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := d.publisher.Unpublish(ctx, req.GetVolumeId(), req.GetTargetPath()); err != nil {
		return nil, toStatus(err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// toStatus maps an error of the layers below to a gRPC status; the message
// reaches the user in the kubelet's event on the pod.
func toStatus(err error) error {
	var invalid *attributes.Error
	code := codes.Internal
	switch {
	case errors.As(err, &invalid):
		code = codes.InvalidArgument
	case errors.Is(err, manager.ErrInProgress):
		code = codes.Aborted
	case errors.Is(err, manager.ErrDenied):
		code = codes.PermissionDenied
	case errors.Is(err, trust.ErrNoTrustBundle):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, fmt.Sprint(err))
}
