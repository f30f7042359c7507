// Command lockdown-drill runs Lockdown's main job end to end: a whole
// incident on a disposable local stack (or, with --existing, on servers
// that already run Lockdown) — intruder, breach, key holders, rotation,
// notification, report — and checks every step in Vault, DNS, PostgreSQL
// and the mailbox. It is its own binary because it links the local
// stack's servers and seeding (testkit), which the operator's lockdown
// must not carry.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/drill"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := drill.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
