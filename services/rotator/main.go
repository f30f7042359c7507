// Command rotator rotates every tenant's secrets as durable jobs shared by all rotator processes (issue 6).
// See docs/architecture.md.
package main

import (
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/services/rotator/internal/app"
)

func main() { runner.Main(events.ServiceRotator, app.Run) }
