// Package e2e holds the end-to-end tests: real kube-apiserver, kubelets and
// containerd on this machine (see package cluster). TestMain starts one
// cluster for the whole package; each test gets its own namespace from
// package framework. The tests need root and are skipped with -short.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/certmint/certmint/test/e2e/cluster"
	"github.com/certmint/certmint/test/e2e/image"
	"github.com/certmint/certmint/test/e2e/internal/repo"
)

// testappImage is built from test/e2e/images/testapp and loaded on every node.
const testappImage = "certmint/testapp:e2e"

// testCluster is the cluster every test in the package runs against.
var testCluster *cluster.Cluster

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("skipping end-to-end tests in -short mode")
		os.Exit(0)
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s e2e: "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
	}
	out, err := repo.OutputDir()
	if err != nil {
		logf("%v", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{
		LogDir:         filepath.Join(out, "e2e", "logs"),
		KubeconfigPath: filepath.Join(out, "e2e", "kubeconfig"),
		Logf:           logf,
	})
	if err != nil {
		logf("starting cluster: %v", err)
		return 1
	}
	logf("cluster Ready in %s", time.Since(start).Round(100*time.Millisecond))
	defer func() {
		if err := c.Stop(); err != nil {
			logf("stopping cluster: %v", err)
		}
	}()
	// An interrupted run still stops the cluster; the deferred Stop would
	// never run.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		logf("%v: stopping cluster", sig)
		if err := c.Stop(); err != nil {
			logf("stopping cluster: %v", err)
		}
		os.Exit(1)
	}()

	tar, err := image.Build(ctx, "./test/e2e/images/testapp", testappImage)
	if err != nil {
		logf("%v", err)
		return 1
	}
	if err := c.LoadImage(ctx, tar); err != nil {
		logf("%v", err)
		return 1
	}
	testCluster = c
	return m.Run()
}
