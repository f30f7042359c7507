package config_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/platform/config"
)

type svc struct {
	config.Common
	Workers int      `env:"WORKERS" default:"4" doc:"Workers."`
	Nodes   []string `env:"NODES" default:"a, b" doc:"Nodes."`
	Token   string   `env:"TOKEN" secret:"true" doc:"Token."`
}

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestLoad(t *testing.T) {
	t.Run("defaults apply when the environment is silent", func(t *testing.T) {
		var c svc
		if err := config.LoadFrom(&c, env(nil)); err != nil {
			t.Fatal(err)
		}
		if c.Workers != 4 || len(c.Nodes) != 2 || c.Nodes[1] != "b" || c.NATSURL != "nats://127.0.0.1:4222" || c.ShutdownTimeout != 15*time.Second {
			t.Fatalf("%+v", c)
		}
	})
	t.Run("every problem is reported at once", func(t *testing.T) {
		var c svc
		err := config.LoadFrom(&c, env(map[string]string{
			"LOCKDOWN_WORKERS": "many", "LOCKDOWN_SHUTDOWN_TIMEOUT": "soon", "LOCKDOWN_NATS_URL": "http://x", "LOCKDOWN_LOG_LEVEL": "loud",
		}))
		if !errors.Is(err, config.ErrInvalid) {
			t.Fatalf("got %v", err)
		}
		for _, want := range []string{"LOCKDOWN_WORKERS", "LOCKDOWN_SHUTDOWN_TIMEOUT", "LOCKDOWN_NATS_URL", "LOCKDOWN_LOG_LEVEL"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
	})
	t.Run("the description marks secrets and never shows their values", func(t *testing.T) {
		md := config.Markdown(&svc{Token: "s3cr3t"})
		if !strings.Contains(md, "`LOCKDOWN_TOKEN` | — | Token. (secret: never logged)") || strings.Contains(md, "s3cr3t") {
			t.Fatalf("%s", md)
		}
	})
}
