package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"
)

// Common holds what every Lockdown service needs. Services embed it in
// their own config struct.
type Common struct {
	NATSURL      string `env:"NATS_URL" default:"nats://127.0.0.1:4222" doc:"NATS server URL(s), comma-separated."`
	NATSUser     string `env:"NATS_USER" doc:"NATS user name of this service (deploy/nats)."`
	NATSPassword string `env:"NATS_PASSWORD" secret:"true" doc:"NATS password of this service."`
	LogLevel     string `env:"LOG_LEVEL" default:"info" doc:"debug, info, warn or error."`
	// ShutdownTimeout bounds the graceful drain after SIGINT/SIGTERM.
	ShutdownTimeout time.Duration `env:"SHUTDOWN_TIMEOUT" default:"15s" doc:"How long in-flight work may take to finish on shutdown."`
	HealthAddr      string        `env:"HEALTH_ADDR" default:":8080" doc:"Address of the /healthz and /readyz endpoints; empty turns them off."`
}

// Validate checks the common fields.
func (c Common) Validate() error {
	var errs []error
	for _, u := range strings.Split(c.NATSURL, ",") {
		parsed, err := url.Parse(strings.TrimSpace(u))
		if err != nil || parsed.Host == "" || (parsed.Scheme != "nats" && parsed.Scheme != "tls") {
			errs = append(errs, fmt.Errorf("%sNATS_URL: %q is not a nats:// or tls:// URL", Prefix, u))
		}
	}
	if (c.NATSUser == "") != (c.NATSPassword == "") {
		errs = append(errs, fmt.Errorf("%sNATS_USER and %sNATS_PASSWORD go together", Prefix, Prefix))
	}
	if _, err := c.SlogLevel(); err != nil {
		errs = append(errs, err)
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("%sSHUTDOWN_TIMEOUT must be positive", Prefix))
	}
	return errors.Join(errs...)
}

// SlogLevel parses LogLevel.
func (c Common) SlogLevel() (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return 0, fmt.Errorf("%sLOG_LEVEL: %q is not debug, info, warn or error", Prefix, c.LogLevel)
	}
	return l, nil
}

// Base returns the common part; service configs embedding Common inherit it.
func (c Common) Base() Common { return c }
