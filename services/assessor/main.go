// Command assessor reads Vault's audit log from PostgreSQL and assesses a breach.
// See docs/architecture.md.
package main

import (
	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/services/assessor/internal/app"
)

func main() { runner.Main(events.ServiceAssessor, app.Run) }
