package runner_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/config"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/testkit/localstack"
	"github.com/lockdown/lockdown/testkit/testwait"
)

type cfg struct {
	config.Common
	Secret string `env:"TEST_SECRET" secret:"true" doc:"A secret."`
}

func TestRun(t *testing.T) {
	t.Run("an invalid configuration exits 2 naming every bad variable", func(t *testing.T) {
		t.Setenv("LOCKDOWN_NATS_URL", "http://nope")
		t.Setenv("LOCKDOWN_SHUTDOWN_TIMEOUT", "0s")
		var out bytes.Buffer
		code := runner.Run(context.Background(), "svc", &out, func(context.Context, *runner.Runtime, *cfg) error { return nil })
		if code != 2 || !strings.Contains(out.String(), "LOCKDOWN_NATS_URL") || !strings.Contains(out.String(), "LOCKDOWN_SHUTDOWN_TIMEOUT") {
			t.Fatalf("code %d, output %s", code, out.String())
		}
	})

	t.Run("a service connects, finds the topology, and exits 0 when its context ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s := localstack.StartTest(t, ctx, localstack.Options{NATS: true})
		t.Setenv("LOCKDOWN_NATS_URL", s.NATS.URL)
		t.Setenv("LOCKDOWN_TEST_SECRET", "very-secret-value")
		runCtx, stop := context.WithCancel(ctx)
		var out bytes.Buffer
		var streams []string
		code := runner.Run(runCtx, "svc", &out, func(ctx context.Context, rt *runner.Runtime, c *cfg) error {
			for _, st := range events.Streams() {
				if _, err := rt.NATS.JS.Stream(ctx, st.Name); err == nil {
					streams = append(streams, st.Name)
				}
			}
			stop()
			<-ctx.Done()
			return ctx.Err()
		})
		if code != 0 || len(streams) != len(events.Streams()) {
			t.Fatalf("code %d, streams %v, output %s", code, streams, out.String())
		}
		if strings.Contains(out.String(), "very-secret-value") {
			t.Fatal("a secret config value reached the log")
		}
	})

	t.Run("a service that cannot reach NATS exits 1", func(t *testing.T) {
		t.Setenv("LOCKDOWN_NATS_URL", "nats://127.0.0.1:1")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var out bytes.Buffer
		if code := runner.Run(ctx, "svc", &out, func(context.Context, *runner.Runtime, *cfg) error { return nil }); code != 1 {
			t.Fatalf("code %d, output %s", code, out.String())
		}
	})

	t.Run("the health endpoints answer, and readiness follows the service's checks and consumers", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s := localstack.StartTest(t, ctx, localstack.Options{NATS: true})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		t.Setenv("LOCKDOWN_NATS_URL", s.NATS.URL)
		t.Setenv("LOCKDOWN_HEALTH_ADDR", addr)
		get := func(path string) int {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				return 0
			}
			_ = resp.Body.Close()
			return resp.StatusCode
		}
		runCtx, stop := context.WithCancel(ctx)
		var out bytes.Buffer
		var live, readyBefore, readyAfter int
		code := runner.Run(runCtx, events.ServiceRotator, &out, func(ctx context.Context, rt *runner.Runtime, c *cfg) error {
			testwait.For(t, 10*time.Second, "the health endpoints", func() bool { return get("/healthz") == http.StatusOK })
			live = get("/healthz")
			readyBefore = get("/readyz") // NATS and the rotator's consumers are there
			if code := runner.Healthcheck(addr, io.Discard); code != 0 {
				t.Errorf("healthcheck exit %d while ready", code)
			}
			rt.AddCheck("postgres", func(context.Context) error { return errors.New("connection refused") })
			readyAfter = get("/readyz")
			if code := runner.Healthcheck(addr, io.Discard); code != 1 {
				t.Errorf("healthcheck exit %d while not ready", code)
			}
			stop()
			<-ctx.Done()
			return ctx.Err()
		})
		if code != 0 || live != http.StatusOK || readyBefore != http.StatusOK || readyAfter != http.StatusServiceUnavailable {
			t.Fatalf("code %d, healthz %d, readyz %d then %d with a failing check; output %s", code, live, readyBefore, readyAfter, out.String())
		}
	})
}
