// Command rotator rotates every tenant's secrets, and the platform-wide
// credentials of the rotation catalogue, as durable jobs shared by all
// rotator processes. `rotator policy <policy file> <catalogue>` prints its
// Vault policy with the part the catalogue generates re-rendered.
// See docs/architecture.md.
package main

import (
	"fmt"
	"os"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/services/rotator/internal/app"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "policy" {
		if err := app.PrintPolicy(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		return
	}
	runner.Main(events.ServiceRotator, app.Run)
}
