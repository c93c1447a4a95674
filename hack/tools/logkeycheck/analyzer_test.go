package main

import (
	"testing"

	"golang.org/x/tools/go/analysis/analysistest"
)

// testdata/src holds package a, which logs well and badly (its "want"
// comments are the expected findings), a _test.go file that must draw none,
// and stand-ins for logr, controller-runtime's log and logkeys under their
// real import paths.
func TestAnalyzer(t *testing.T) {
	analysistest.Run(t, analysistest.TestData(), Analyzer, "a")
}
