// Package logkeys is a stand-in for the real one, under its import path.
package logkeys

const (
	VolumeID = "volumeID"
	PodName  = "podName"
)
