package cli

import (
	"context"
	"io"
	"log/slog"
	"net/http"

	"github.com/lockdown/lockdown/pkg/events"
)

// ReadModelForTest is the operator's read model, for the tests of package
// cli_test that look at the console.
type ReadModelForTest struct{ *ReadModel }

// OpenReadModelForTest opens the read model as the operator.
func OpenReadModelForTest(ctx context.Context, url, password string) (ReadModelForTest, error) {
	rm, err := OpenReadModel(ctx, NATS{URL: url, User: events.UserOperator, Password: password})
	return ReadModelForTest{rm}, err
}

// Console is the console's handler over this read model.
func (r ReadModelForTest) Console() http.Handler {
	return newConsole(r.ReadModel, "", "", slog.New(slog.NewTextHandler(io.Discard, nil))).routes()
}
