package app

import (
	"errors"

	"github.com/lockdown/lockdown/pkg/platform/config"
)

var errBreachConcurrency = errors.New(config.Prefix + "CONTAINMENT_BREACH_CONCURRENCY must be at least 1")

func joinErrs(errs []error) error { return errors.Join(errs...) }
