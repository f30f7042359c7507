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
type ReadModelForTest struct{ *readModel }

// OpenReadModelForTest opens the read model as the operator.
func OpenReadModelForTest(ctx context.Context, url, password string) (ReadModelForTest, error) {
	user := events.UserOperator
	rm, err := openReadModel(ctx, natsFlags{url: &url, user: &user, password: password})
	return ReadModelForTest{rm}, err
}

// Console is the console's handler over this read model.
func (r ReadModelForTest) Console() http.Handler {
	return (&console{rm: r.readModel, js: r.conn.JS, log: slog.New(slog.NewTextHandler(io.Discard, nil))}).routes()
}
