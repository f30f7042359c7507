package drill_test

import (
	"bytes"
	"context"
	"os"
	"testing"

	"github.com/lockdown/lockdown/cmd/lockdown/internal/drill"
	"github.com/lockdown/lockdown/testkit/localstack"
)

// TestMain builds the services the drill starts as processes from this
// source, not from a .bin that may be stale.
func TestMain(m *testing.M) { os.Exit(localstack.RunWithServices(m)) }

// runDrill runs the drill in-process, as lockdown-drill does, and returns
// its exit code and what it printed.
func runDrill(ctx context.Context, args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := drill.Main(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}
