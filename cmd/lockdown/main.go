// Command lockdown is the operator CLI: trigger a breach as a SIEM would,
// and run the local stack with every service (`lockdown dev`). Later
// issues add incident status, reports, dead letters and the drill.
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
