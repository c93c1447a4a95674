package csi_test

import (
	"path/filepath"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
)

// sanitySkips are the csi-sanity specs a node-only driver of inline
// ephemeral volumes cannot run, each with the reason. Every other spec runs
// (specs for capabilities the driver does not advertise skip themselves).
// The list is documented in docs/driver.md.
var sanitySkips = []string{
	// The Controller service specs call it unconditionally; a node-only
	// driver of inline volumes has none (every call is Unimplemented).
	`\[Controller Server\]`,
	// Creates a volume through the Controller service first; inline volumes
	// have no Controller service, so CreateVolume is Unimplemented.
	"NodeUnpublishVolume should remove target path",
}

func TestSanity(t *testing.T) {
	h := newHarness(t, nil)
	dir := t.TempDir()
	cfg := sanity.NewTestConfig()
	cfg.Address = h.socket
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")

	sanity.GinkgoTest(&cfg)
	RegisterFailHandler(Fail)
	suite, reporter := GinkgoConfiguration()
	suite.SkipStrings = append(suite.SkipStrings, sanitySkips...)
	reporter.Succinct = !reporter.Verbose && !reporter.VeryVerbose
	RunSpecs(t, "csi-sanity", suite, reporter)
}
