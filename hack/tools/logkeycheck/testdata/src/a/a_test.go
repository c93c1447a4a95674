package a

import (
	"testing"

	"github.com/go-logr/logr"
)

// Tests may log with any keys.
func TestFree(t *testing.T) {
	var l logr.Logger
	l.Info("msg", "free", 1, "odd")
}
