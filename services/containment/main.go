// Command containment is Lockdown's first responder: it takes breach
// events, seals every Vault node, opens the incident,
// watches the unseal gate and revokes access. See docs/architecture.md.
package main

import (
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/services/containment/internal/app"
)

func main() { runner.Main(events.ServiceContainment, app.Run) }
