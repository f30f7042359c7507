// Command lockdown is the operator CLI: raise a breach as a SIEM would,
// follow incidents from the read model (status, the web console, the
// report), steer them (confirm, resume, abort, retry, review), replay dead
// letters, install the NATS topology, database roles and Vault baseline.
// The drill of the whole runbook is its own binary, lockdown-drill
// (./lockdown-drill): lockdown links no test server.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
