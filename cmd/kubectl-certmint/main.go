// Command kubectl-certmint is the kubectl plugin for certmint: put it on the
// PATH and run `kubectl certmint status|inspect|renew|approve|deny`.
// docs/kubectl-plugin.md describes the commands, their exit codes and the
// RBAC each needs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/certmint/certmint/internal/kubectlcertmint"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := kubectlcertmint.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
