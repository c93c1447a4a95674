package a

import (
	"context"
	"errors"

	"github.com/certmint/certmint/pkg/logkeys"
	lk "github.com/certmint/certmint/pkg/logkeys"
	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

const localKey = "order"

var err = errors.New("boom")

// Keys from logkeys are fine, however they are spelled.
func good(l logr.Logger, ctx context.Context) {
	l.Info("msg")
	l.Info("msg", logkeys.VolumeID, 1, logkeys.PodName, "p")
	l.Error(err, "msg", (logkeys.VolumeID), 1)
	l.WithValues(lk.PodName, "p").V(2).Info("msg", logkeys.VolumeID, 1)
	log.FromContext(ctx).Info("msg", logkeys.VolumeID, 1)
	logr.FromContextOrDiscard(ctx).WithName("x").Error(nil, "msg", logkeys.PodName, "p")
	// A spread pair slice cannot be checked.
	kvs := []any{"anything", 1}
	l.Info("msg", kvs...)
}

func bad(l logr.Logger, ctx context.Context, dynamic string) {
	l.Info("msg", "volumeID", 1)                            // want `log key "volumeID" is a string literal; use a constant from github.com/certmint/certmint/pkg/logkeys`
	l.Error(err, "msg", logkeys.VolumeID, 1, "reason", "x") // want `log key "reason" is a string literal`
	l.WithValues(localKey, 1)                               // want `log key localKey \(= "order"\) is a constant of package a`
	l.V(4).Info("msg", dynamic, 1)                          // want `log key dynamic is not a constant`
	l.Info("msg", "a"+"b", 1)                               // want `log key "a" \+ "b" \(= "ab"\) is a constant expression`
	log.FromContext(ctx).Info("msg", "pod", 1)              // want `log key "pod" is a string literal`
	l.Info("msg", logkeys.VolumeID)                         // want `odd number of key/value arguments \(1\) in call to logr.Logger.Info`
	l.Error(err, "msg", "k", 1, logkeys.PodName)            // want `odd number of key/value arguments \(3\)` `log key "k" is a string literal`
}

// A Logger reached through an embedded field is still a logr.Logger.
type reconciler struct {
	logr.Logger
}

func (r reconciler) embedded() {
	r.Info("msg", "embedded", 1) // want `log key "embedded" is a string literal`
}

// Other types with the same method names are not loggers.
type notLogger struct{}

func (notLogger) Info(msg string, kv ...any) {}

func other() {
	notLogger{}.Info("msg", "free", 1)
}
