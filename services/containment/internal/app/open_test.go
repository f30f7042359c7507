package app_test

import (
	"context"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/lockdown/lockdown/pkg/events"
	"github.com/lockdown/lockdown/pkg/platform/runner"
	"github.com/lockdown/lockdown/services/containment/internal/app"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestOpenFailsCleanly: Open failing after the database opened (a token
// file missing) returns the error and releases what it opened, instead of
// calling a nil close (it panicked when the skeleton came in).
func TestOpenFailsCleanly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := localstack.StartTest(t, ctx, localstack.Options{Postgres: true})
	cfg := &app.Config{DatabaseURL: s.Postgres.URL, VaultAddrs: []string{"http://127.0.0.1:1"}, VaultTimeout: time.Second,
		VaultSealTokenFile: filepath.Join(t.TempDir(), "missing-seal-token")}
	rt := runner.NewRuntime(events.ServiceContainment, slog.New(slog.DiscardHandler), nil, nil, nil)
	a, closeAdapters, err := app.Open(ctx, rt, cfg)
	if err == nil || closeAdapters != nil || a.Store != nil {
		t.Fatalf("Open with a missing token file: %v (adapters %+v)", err, a)
	}
}
