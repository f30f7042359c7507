// Package app is the notifier's composition root.
package app

import (
	"context"

	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/runner"
)

// Config is the notifier's configuration.
type Config struct {
	config.Common
}

// Run starts the notifier. The foundation connects it to NATS and makes sure
// the topology (including its durable consumers) exists, so events wait
// for it durably; its handlers arrive with their issue.
func Run(ctx context.Context, rt *runner.Runtime, cfg *Config) error {
	<-ctx.Done()
	return nil
}
