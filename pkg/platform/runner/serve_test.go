package runner_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/pkg/platform/stream"
)

func TestServeWiring(t *testing.T) {
	handler := stream.Handler(func(context.Context, *stream.Delivery) error { return nil })
	rt := runner.NewRuntime(events.ServiceRotator, slog.New(slog.DiscardHandler), nil, nil, nil)
	serve := func(w runner.Wiring) error {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		return rt.Serve(ctx, time.Second, w)
	}
	t.Run("a handler for a durable the contract does not have is refused before anything runs", func(t *testing.T) {
		err := serve(runner.Wiring{Consumers: map[string]runner.Consumer{
			events.ConsumerRotatorPlanner: {Handler: handler}, events.ConsumerRotatorJobs: {Handler: handler}, "rotator-typo": {Handler: handler}}})
		if !errors.Is(err, runner.ErrWiring) || !strings.Contains(err.Error(), "rotator-typo: no such durable consumer") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("another service's durable and a durable of the service left unwired are both reported", func(t *testing.T) {
		err := serve(runner.Wiring{Consumers: map[string]runner.Consumer{
			events.ConsumerRotatorPlanner: {Handler: handler}, events.ConsumerNotifier: {Handler: handler}}})
		if !errors.Is(err, runner.ErrWiring) || !strings.Contains(err.Error(), "notifier: a consumer of notifier") ||
			!strings.Contains(err.Error(), events.ConsumerRotatorJobs+": the service's consumer has no handler") {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("a loop's failure ends Serve with the loop's name", func(t *testing.T) {
		boom := errors.New("boom")
		cli := runner.NewRuntime(events.ServiceCLI, slog.New(slog.DiscardHandler), nil, nil, nil) // a service without consumers
		err := cli.Serve(context.Background(), time.Second, runner.Wiring{Loops: map[string]func(context.Context) error{
			"engine": func(context.Context) error { return boom }}})
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), "engine") {
			t.Fatalf("err %v", err)
		}
	})
}
