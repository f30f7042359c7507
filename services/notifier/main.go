// Command notifier tells every tenant once, by email and signed webhook.
// See docs/architecture.md.
package main

import (
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/services/notifier/internal/app"
)

func main() { runner.Main(events.ServiceNotifier, app.Run) }
